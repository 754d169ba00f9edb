//! The data-plane REST API under `/api`: authentication of every hub call, request validation,
//! and status codes exactly as the SDKs expect them (202 sends, 200 puts, 204 deletes and
//! closes, 200/404 HEADs without a body).

mod manage;
pub mod request_id;
mod send;
mod token;

use crate::dataplane::filter::Filter;
use crate::dataplane::hub::{canonical_hub, Hub};
pub use crate::dataplane::names::{validate_group, validate_hub, validate_id};
use crate::error::ApiError;
use crate::keys::auth::{bearer_token, verify_rest_token};
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode, Uri};
use axum::routing::{delete, get, head, post, put};
use axum::Router;
use hubbub_proto::keys::KeySlot;
use std::collections::HashSet;
use std::sync::Arc;

/// Largest accepted message body.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

pub fn router(state: AppState) -> Router {
    use manage::*;
    use send::*;
    Router::new()
        .without_v07_checks()
        .route("/api/health", get(health).head(health))
        .route("/api/hubs/{hub}/:send", post(send_to_all))
        .route("/api/hubs/{hub}/:closeConnections", post(close_all))
        .route("/api/hubs/{hub}/:addToGroups", post(add_to_groups))
        .route(
            "/api/hubs/{hub}/:removeFromGroups",
            post(remove_from_groups),
        )
        .route("/api/hubs/{hub}/:generateToken", post(token::generate))
        .route("/api/hubs/{hub}/groups/{group}/:send", post(send_to_group))
        .route(
            "/api/hubs/{hub}/groups/{group}/:closeConnections",
            post(close_group),
        )
        .route("/api/hubs/{hub}/groups/{group}", head(group_exists))
        .route(
            "/api/hubs/{hub}/groups/{group}/connections",
            get(list_group),
        )
        .route(
            "/api/hubs/{hub}/groups/{group}/connections/{connection}",
            put(add_connection_to_group).delete(remove_connection_from_group),
        )
        .route("/api/hubs/{hub}/users/{user}/:send", post(send_to_user))
        .route(
            "/api/hubs/{hub}/users/{user}/:closeConnections",
            post(close_user),
        )
        .route("/api/hubs/{hub}/users/{user}", head(user_exists))
        .route(
            "/api/hubs/{hub}/users/{user}/groups",
            delete(remove_user_from_all_groups),
        )
        .route(
            "/api/hubs/{hub}/users/{user}/groups/{group}",
            put(add_user_to_group).delete(remove_user_from_group),
        )
        .route(
            "/api/hubs/{hub}/connections/{connection}/:send",
            post(send_to_connection),
        )
        .route(
            "/api/hubs/{hub}/connections/{connection}",
            head(connection_exists).delete(close_connection),
        )
        .route(
            "/api/hubs/{hub}/connections/{connection}/groups",
            delete(remove_connection_from_all_groups),
        )
        .route(
            "/api/hubs/{hub}/permissions/{permission}/connections/{connection}",
            put(grant_permission)
                .delete(revoke_permission)
                .head(check_permission),
        )
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            request_id::layer,
        ))
        .with_state(state)
}

async fn health() -> StatusCode {
    StatusCode::OK
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such operation")
}

/// A request whose bearer token verified: an access key (its slot), or an identity from a
/// trusted identity provider.
#[derive(Debug, Clone)]
pub enum RestCaller {
    Key(KeySlot),
    Identity(std::sync::Arc<crate::oidc::Identity>),
}

impl FromRequestParts<AppState> for RestCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let token = bearer_token(header).map_err(|e| refused(state, parts.uri.path(), e))?;
        if let Some(oidc) = state
            .oidc
            .as_ref()
            .filter(|_| crate::oidc::is_identity_token(token))
        {
            return identity_caller(state, oidc, token, parts).await;
        }
        let ring = state.keys.current();
        let result = verify_rest_token(
            token,
            &ring,
            &state.endpoints,
            parts.uri.path(),
            state.keys.clock().now_millis(),
            state.token_leeway_secs,
        );
        match result {
            Ok(signer) => {
                state.keys.record_use(
                    signer.slot,
                    crate::keys::usage::UseKind::Rest,
                    signer.retiring,
                );
                if let Some(slot) = parts.extensions.get::<request_id::CallerSlot>() {
                    let _ = slot.0.set(signer.slot.to_string().to_ascii_lowercase());
                }
                Ok(RestCaller::Key(signer.slot))
            }
            Err(e) => {
                if let crate::keys::auth::AuthError::StaleKey { slot, version, .. } = &e {
                    let origin = crate::peer::Origin::of(parts, &state.trusted_proxies);
                    state.keys.record_stale(
                        *slot,
                        *version,
                        &crate::keys::stale::Caller {
                            kind: crate::keys::stale::CallKind::Rest,
                            hub: hub_of_path(parts.uri.path()),
                            source_address: &origin.address,
                            user_agent: origin.user_agent.as_deref(),
                        },
                    );
                }
                tracing::debug!(path = parts.uri.path(), reason = %e, "REST request refused");
                Err(refused(state, parts.uri.path(), e))
            }
        }
    }
}

/// A REST call with an identity-provider token: verified, and allowed by its roles (403 when
/// its roles do not allow the operation).
async fn identity_caller(
    state: &AppState,
    oidc: &crate::oidc::Oidc,
    token: &str,
    parts: &Parts,
) -> Result<RestCaller, ApiError> {
    let path = parts.uri.path();
    let identity = match oidc.verify(token, state.keys.clock().now_millis()).await {
        Ok(identity) => identity,
        Err(e) => {
            tracing::debug!(path, reason = %e, "REST request with an identity token refused");
            state.identity_refused(Some(hub_of_path(path)).filter(|h| !h.is_empty()), &e);
            return Err(ApiError::unauthorized(e.to_string()));
        }
    };
    if !crate::oidc::allows(identity.grant, &parts.method) {
        let e = crate::oidc::OidcError::Forbidden(match identity.grant {
            Some(_) => format!("{} needs the owner role", parts.method),
            None => format!(
                "the '{}' claim holds none of the roles this instance grants",
                oidc.settings().role_claim
            ),
        });
        state.identity_refused(Some(hub_of_path(path)).filter(|h| !h.is_empty()), &e);
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            e.to_string(),
        ));
    }
    oidc.record_use(&identity, false, state.keys.clock().now_millis());
    if let Some(slot) = parts.extensions.get::<request_id::CallerSlot>() {
        let _ = slot
            .0
            .set(format!("oidc:{}@{}", identity.subject, identity.issuer));
    }
    state.telemetry.identity(&identity.issuer, "rest");
    Ok(RestCaller::Identity(std::sync::Arc::new(identity)))
}

/// A refused REST token, in the live trace.
fn refused(state: &AppState, path: &str, e: crate::keys::auth::AuthError) -> ApiError {
    let hub = Some(hub_of_path(path)).filter(|h| !h.is_empty());
    state.auth_failed("rest", hub, &e);
    e.into()
}

/// The hub a REST path names (`/api/hubs/{hub}/...`), as written; empty for other paths.
fn hub_of_path(path: &str) -> &str {
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    match (segments.next(), segments.next(), segments.next()) {
        (Some("api"), Some("hubs"), Some(hub)) => hub,
        _ => "",
    }
}

/// The query string, with repeated parameters (`excluded=a&excluded=b`) kept. Names are matched
/// case-insensitively.
pub struct QueryParams(Vec<(String, String)>);

impl QueryParams {
    pub fn from_uri(uri: &Uri) -> Self {
        let query = uri.query().unwrap_or("");
        Self(
            url::form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
        )
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn one(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `excluded` connection ids.
    pub fn excluded(&self) -> HashSet<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("excluded"))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The parsed `filter`, or a 400 saying where it is wrong.
    pub fn filter(&self) -> Result<Option<Filter>, ApiError> {
        self.one("filter").map(parse_filter).transpose()
    }

    /// An integer parameter within `range`.
    pub fn number(
        &self,
        name: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<Option<i64>, ApiError> {
        let Some(text) = self.one(name) else {
            return Ok(None);
        };
        match text.parse::<i64>() {
            Ok(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(ApiError::bad_request(
                "InvalidQueryParameter",
                format!(
                    "'{name}' must be an integer from {} to {}",
                    range.start(),
                    range.end()
                ),
            )),
        }
    }
}

pub fn parse_filter(text: &str) -> Result<Filter, ApiError> {
    Filter::parse(text)
        .map_err(|e| ApiError::bad_request("InvalidFilter", format!("invalid filter: {e}")))
}

/// Validates the hub name and returns the hub if any client ever connected to it.
pub fn existing_hub(state: &AppState, hub: &str) -> Result<Option<Arc<Hub>>, ApiError> {
    validate_hub(hub)?;
    Ok(state.hubs.get(&canonical_hub(hub)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_query_parameters() {
        let uri: Uri = "/x?api-version=1&excluded=a&Excluded=b%20c&filter=userId%20eq%20%27x%27"
            .parse()
            .unwrap();
        let q = QueryParams::from_uri(&uri);
        let excluded = q.excluded();
        assert!(excluded.contains("a") && excluded.contains("b c"));
        assert_eq!(q.one("filter"), Some("userId eq 'x'"));
        let uri: Uri = "/x?messageTtlSeconds=301".parse().unwrap();
        assert!(QueryParams::from_uri(&uri)
            .number("messageTtlSeconds", 0..=300)
            .is_err());
    }
}
