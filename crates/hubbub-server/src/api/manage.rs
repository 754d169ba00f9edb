//! Membership, closing, existence checks, permissions and group listings.

use super::{parse_filter, validate_group, validate_hub, validate_id, QueryParams, RestCaller};
use crate::dataplane::delivery::Target;
use crate::dataplane::ops::{all, found, Answer, Ask, PermissionAction, Question};
use crate::error::{read_body, ApiError};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hubbub_proto::roles::Permission;
use serde::{Deserialize, Serialize};

/// Default and largest page of `list connections`.
const MAX_PAGE_SIZE: i64 = 200;
/// Largest `:addToGroups` / `:removeFromGroups` body.
const MAX_GROUPS_BODY_BYTES: usize = 1024 * 1024;

fn exists(found: bool) -> StatusCode {
    if found {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    }
}

fn reason(query: &QueryParams) -> String {
    query
        .one("reason")
        .filter(|r| !r.is_empty())
        .unwrap_or("ClosedByAppServer")
        .chars()
        .take(1024)
        .collect()
}

/// Runs a question on this node and on the other nodes it concerns.
async fn ask(
    state: &AppState,
    hub: &str,
    question: Ask,
    enough: fn(&Answer) -> bool,
) -> Result<Vec<Answer>, ApiError> {
    validate_hub(hub)?;
    Ok(state.ask(&Question::new(hub, question), enough).await)
}

fn any_ok(answers: &[Answer]) -> bool {
    answers.iter().any(|a| a.ok)
}

pub async fn add_connection_to_group(
    _caller: RestCaller,
    State(state): State<AppState>,
    Path((hub, group, connection)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    validate_hub(&hub)?;
    validate_group(&group)?;
    validate_id("connection id", &connection)?;
    let id = connection.clone();
    let answers = ask(&state, &hub, Ask::AddConnectionToGroup { id, group }, found).await?;
    if let Some(refused) = answers.iter().find_map(|a| a.refused.clone()) {
        return Err(ApiError::bad_request("TooManyGroups", refused));
    }
    if any_ok(&answers) {
        Ok(StatusCode::OK)
    } else {
        Err(ApiError::not_found(format!(
            "Connection id '{connection}' doesn't exist"
        )))
    }
}

pub async fn remove_connection_from_group(
    _caller: RestCaller,
    State(state): State<AppState>,
    Path((hub, group, connection)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    validate_hub(&hub)?;
    validate_group(&group)?;
    validate_id("connection id", &connection)?;
    let question = Ask::RemoveConnectionFromGroup {
        id: connection,
        group,
    };
    ask(&state, &hub, question, found).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn remove_connection_from_all_groups(
    _caller: RestCaller,
    State(state): State<AppState>,
    Path((hub, connection)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    validate_hub(&hub)?;
    validate_id("connection id", &connection)?;
    let question = Ask::RemoveConnectionFromAllGroups { id: connection };
    ask(&state, &hub, question, found).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn add_user_to_group(
    _caller: RestCaller,
    State(state): State<AppState>,
    Path((hub, user, group)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    validate_hub(&hub)?;
    validate_id("user id", &user)?;
    validate_group(&group)?;
    ask(&state, &hub, Ask::AddUserToGroup { user, group }, all).await?;
    Ok(StatusCode::OK)
}

pub async fn remove_user_from_group(
    _caller: RestCaller,
    State(state): State<AppState>,
    Path((hub, user, group)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    validate_hub(&hub)?;
    validate_id("user id", &user)?;
    validate_group(&group)?;
    ask(&state, &hub, Ask::RemoveUserFromGroup { user, group }, all).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn remove_user_from_all_groups(
    _caller: RestCaller,
    State(state): State<AppState>,
    Path((hub, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    validate_hub(&hub)?;
    validate_id("user id", &user)?;
    ask(&state, &hub, Ask::RemoveUserFromAllGroups { user }, all).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupsRequest {
    groups: Vec<String>,
    #[serde(default)]
    filter: Option<String>,
}

async fn change_groups(
    state: AppState,
    hub: String,
    headers: HeaderMap,
    body: axum::body::Body,
    add: bool,
) -> Result<StatusCode, ApiError> {
    let hub_name = hub;
    validate_hub(&hub_name)?;
    let body = read_body(body, &headers, MAX_GROUPS_BODY_BYTES).await?;
    let request: GroupsRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "InvalidRequestBody",
            format!(r#"the body must be JSON like {{"groups": ["g1"], "filter": "userId eq 'u1'"}}: {e}"#),
        )
    })?;
    if request.groups.is_empty() {
        return Err(ApiError::bad_request(
            "InvalidRequestBody",
            "'groups' must name at least one group",
        ));
    }
    for group in &request.groups {
        validate_group(group)?;
    }
    let filter = request.filter.filter(|f| !f.trim().is_empty());
    if let Some(text) = &filter {
        // A bad filter is a 400 before anything changes on any node.
        parse_filter(text)?;
    }
    let question = Ask::ChangeGroups {
        groups: request.groups,
        filter,
        add,
    };
    ask(&state, &hub_name, question, all).await?;
    Ok(StatusCode::OK)
}

pub async fn add_to_groups(
    _caller: RestCaller,
    State(state): State<AppState>,
    Path(hub): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<StatusCode, ApiError> {
    change_groups(state, hub, headers, body, true).await
}

pub async fn remove_from_groups(
    _caller: RestCaller,
    State(state): State<AppState>,
    Path(hub): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<StatusCode, ApiError> {
    change_groups(state, hub, headers, body, false).await
}

async fn close(
    state: AppState,
    hub: String,
    uri: Uri,
    scope: Target,
) -> Result<StatusCode, ApiError> {
    let query = QueryParams::from_uri(&uri);
    let question = Ask::Close {
        scope,
        excluded: query.excluded().into_iter().map(str::to_owned).collect(),
        reason: reason(&query),
        cause: crate::dataplane::connection::CloseCause::RestClose,
    };
    let enough = if matches!(
        question,
        Ask::Close {
            scope: Target::Connection(_),
            ..
        }
    ) {
        found
    } else {
        all
    };
    ask(&state, &hub, question, enough).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn close_all(
    _caller: RestCaller,
    State(state): State<AppState>,
    Path(hub): Path<String>,
    uri: Uri,
) -> Result<StatusCode, ApiError> {
    close(state, hub, uri, Target::All).await
}

pub async fn close_group(
    _caller: RestCaller,
    State(state): State<AppState>,
    Path((hub, group)): Path<(String, String)>,
    uri: Uri,
) -> Result<StatusCode, ApiError> {
    validate_group(&group)?;
    close(state, hub, uri, Target::Group(group)).await
}

pub async fn close_user(
    _caller: RestCaller,
    State(state): State<AppState>,
    Path((hub, user)): Path<(String, String)>,
    uri: Uri,
) -> Result<StatusCode, ApiError> {
    validate_id("user id", &user)?;
    close(state, hub, uri, Target::User(user)).await
}

pub async fn close_connection(
    _caller: RestCaller,
    State(state): State<AppState>,
    Path((hub, connection)): Path<(String, String)>,
    uri: Uri,
) -> Result<StatusCode, ApiError> {
    validate_id("connection id", &connection)?;
    close(state, hub, uri, Target::Connection(connection)).await
}

pub async fn connection_exists(
    _caller: RestCaller,
    State(state): State<AppState>,
    Path((hub, connection)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let answers = ask(
        &state,
        &hub,
        Ask::ConnectionExists { id: connection },
        found,
    )
    .await?;
    Ok(exists(any_ok(&answers)))
}

pub async fn user_exists(
    _caller: RestCaller,
    State(state): State<AppState>,
    Path((hub, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let answers = ask(&state, &hub, Ask::UserExists { user }, found).await?;
    Ok(exists(any_ok(&answers)))
}

pub async fn group_exists(
    _caller: RestCaller,
    State(state): State<AppState>,
    Path((hub, group)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    validate_hub(&hub)?;
    validate_group(&group)?;
    let answers = ask(&state, &hub, Ask::GroupExists { group }, found).await?;
    Ok(exists(any_ok(&answers)))
}

fn permission(name: &str) -> Result<Permission, ApiError> {
    Permission::from_rest_name(name).ok_or_else(|| {
        ApiError::bad_request(
            "InvalidPermission",
            "the permission must be sendToGroup or joinLeaveGroup",
        )
    })
}

fn target(query: &QueryParams) -> Result<Option<String>, ApiError> {
    let target = query
        .one("targetName")
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    if let Some(group) = &target {
        validate_group(group)?;
    }
    Ok(target)
}

async fn on_permission(
    state: &AppState,
    hub: &str,
    name: &str,
    connection: String,
    uri: &Uri,
    action: PermissionAction,
) -> Result<bool, ApiError> {
    validate_hub(hub)?;
    permission(name)?;
    let target = target(&QueryParams::from_uri(uri))?;
    let question = Ask::Permission {
        id: connection,
        action,
        permission: name.to_string(),
        target,
    };
    Ok(any_ok(&ask(state, hub, question, found).await?))
}

pub async fn grant_permission(
    _caller: RestCaller,
    State(state): State<AppState>,
    Path((hub, name, connection)): Path<(String, String, String)>,
    uri: Uri,
) -> Result<StatusCode, ApiError> {
    let id = connection.clone();
    if on_permission(&state, &hub, &name, id, &uri, PermissionAction::Grant).await? {
        Ok(StatusCode::OK)
    } else {
        Err(ApiError::not_found(format!(
            "Connection id '{connection}' doesn't exist"
        )))
    }
}

pub async fn revoke_permission(
    _caller: RestCaller,
    State(state): State<AppState>,
    Path((hub, name, connection)): Path<(String, String, String)>,
    uri: Uri,
) -> Result<StatusCode, ApiError> {
    on_permission(
        &state,
        &hub,
        &name,
        connection,
        &uri,
        PermissionAction::Revoke,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn check_permission(
    _caller: RestCaller,
    State(state): State<AppState>,
    Path((hub, name, connection)): Path<(String, String, String)>,
    uri: Uri,
) -> Result<StatusCode, ApiError> {
    let has = on_permission(
        &state,
        &hub,
        &name,
        connection,
        &uri,
        PermissionAction::Check,
    )
    .await?;
    Ok(exists(has))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionItem {
    connection_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionPage {
    value: Vec<ConnectionItem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_link: Option<String>,
}

/// What a continuation token carries: where the last page ended and how many of `top` remain.
#[derive(Serialize, Deserialize)]
struct Continuation {
    after: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    remaining: Option<i64>,
}

pub async fn list_group(
    _caller: RestCaller,
    State(state): State<AppState>,
    Path((hub_name, group)): Path<(String, String)>,
    uri: Uri,
) -> Result<Json<ConnectionPage>, ApiError> {
    validate_hub(&hub_name)?;
    validate_group(&group)?;
    let query = QueryParams::from_uri(&uri);
    let page_size = query
        .number("maxpagesize", 1..=MAX_PAGE_SIZE)?
        .unwrap_or(MAX_PAGE_SIZE);
    let top = query.number("top", 1..=i64::from(i32::MAX))?;
    let continuation: Option<Continuation> = match query.one("continuationToken") {
        Some(token) => Some(
            URL_SAFE_NO_PAD
                .decode(token)
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "InvalidContinuationToken",
                        "the continuationToken is not one this service issued",
                    )
                })?,
        ),
        None => None,
    };
    let remaining = continuation.as_ref().and_then(|c| c.remaining).or(top);
    let limit = remaining.map_or(page_size, |r| r.min(page_size)).max(0) as usize;
    let after = continuation.as_ref().map(|c| c.after.as_str());
    // Every node's members after `after` (up to one more than the page, to know if there is
    // more), merged in connection-id order.
    let (page, more) = if limit > 0 {
        let question = Ask::ListGroup {
            group: group.clone(),
            after: after.map(str::to_owned),
            limit: limit + 1,
        };
        let mut members: Vec<(String, Option<String>)> = ask(&state, &hub_name, question, all)
            .await?
            .into_iter()
            .flat_map(|a| a.connections)
            .collect();
        members.sort_unstable();
        members.dedup_by(|a, b| a.0 == b.0);
        let more = members.len() > limit;
        members.truncate(limit);
        (members, more)
    } else {
        (Vec::new(), false)
    };
    let remaining_after = remaining.map(|r| r - page.len() as i64);
    let next_link = match (page.last(), more && remaining_after.is_none_or(|r| r > 0)) {
        (Some(last), true) => {
            let token = URL_SAFE_NO_PAD.encode(
                serde_json::to_vec(&Continuation {
                    after: last.0.clone(),
                    remaining: remaining_after,
                })
                .unwrap_or_default(),
            );
            let path = uri.path();
            let api_version = query.one("api-version").unwrap_or("2024-12-01");
            Some(format!(
                "{path}?continuationToken={token}&maxpagesize={page_size}&api-version={}",
                url::form_urlencoded::byte_serialize(api_version.as_bytes()).collect::<String>()
            ))
        }
        _ => None,
    };
    Ok(Json(ConnectionPage {
        value: page
            .into_iter()
            .map(|(connection_id, user_id)| ConnectionItem {
                connection_id,
                user_id,
            })
            .collect(),
        next_link,
    }))
}
