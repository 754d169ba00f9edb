//! The portal: pages embedded in the binary, served by the admin listener at `/portal`. Sign in
//! with the admin token; the session is an HttpOnly, SameSite=Strict cookie, and every
//! state-changing request must also carry the session's CSRF token in `X-CSRF-Token`.

use crate::state::AppState;
use crate::store::AuditEntry;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use std::net::SocketAddr;

pub const COOKIE: &str = "hubbub_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

pub mod sessions;

const INDEX: &str = include_str!("index.html");
const LOGIN: &str = include_str!("login.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// The session id from the request's cookie, if any.
pub fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/portal", get(index))
        .route("/portal/", get(index))
        .route("/portal/login", post(login))
        .route("/portal/logout", post(logout))
        .route(
            "/portal/app.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    APP_JS,
                )
            }),
        )
        .route(
            "/portal/app.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_CSS) }),
        )
}

fn html_page(body: String) -> Response {
    let mut response = Html(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
        ),
    );
    response
}

fn login_page(error: &str) -> String {
    LOGIN.replace("{{error}}", &html_escape(error))
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn index(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match session_id(&headers).and_then(|id| state.portal.csrf(&id)) {
        Some(csrf) => html_page(INDEX.replace("{{csrf}}", csrf.expose())),
        None => html_page(login_page("")),
    }
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form<LoginForm>,
) -> Response {
    if let Err(wait) = state.portal.may_sign_in(peer.ip()) {
        tracing::warn!(source = %peer.ip(), "portal sign-in refused: too many failed sign-ins");
        let mut response = html_page(login_page(&format!(
            "Too many failed sign-ins from this address; try again in {wait} s."
        )));
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        if let Ok(value) = HeaderValue::from_str(&wait.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    if !state.admin_token.matches(form.token.trim()) {
        state.portal.failed(peer.ip());
        tracing::warn!(source = %peer.ip(), "portal sign-in with a wrong admin token");
        let mut response = html_page(login_page("That is not the admin token of this instance."));
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        return response;
    }
    let Some((id, _csrf)) = state.portal.create() else {
        let mut response = html_page(login_page("Too many open sessions; try again later."));
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return response;
    };
    let store = state.keys.store().clone();
    let (now, source) = (state.keys.clock().now_millis(), peer.ip().to_string());
    let _ = tokio::task::spawn_blocking(move || {
        store.append_audit(&AuditEntry {
            at: now,
            event: "portal_login",
            actor: "admin-token",
            source: Some(&source),
            ..AuditEntry::default()
        })
    })
    .await;
    let cookie = format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        sessions::SESSION_LIFETIME.as_secs()
    );
    let mut response = Redirect::to("/portal#/keys").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = session_id(&headers) {
        // A cross-site form cannot carry the CSRF header, so it cannot sign anyone out.
        let csrf_ok = state.portal.csrf(&id).is_some_and(|csrf| {
            headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| csrf.matches(v))
        });
        if !csrf_ok {
            return StatusCode::FORBIDDEN.into_response();
        }
        state.portal.end(&id);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("hubbub_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    response
}
