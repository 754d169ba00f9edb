//! A request id for every REST call: made here (32 hex characters), returned in
//! `x-ms-request-id`, and the `request_id` field of a span around the call, so every log line the
//! call writes carries it. A caller's own `x-ms-client-request-id` (as the Azure SDKs send it) is
//! echoed back when it is a short token. The call itself is logged when it fails (4xx at debug,
//! 5xx as a warning) and at debug otherwise: method, path (never the query), status, duration;
//! and counted by operation and status, with its duration (`/metrics`).

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-ms-request-id");
pub const CLIENT_REQUEST_ID: HeaderName = HeaderName::from_static("x-ms-client-request-id");
/// The longest client request id echoed back.
const MAX_CLIENT_REQUEST_ID: usize = 128;

/// This process's prefix: 16 random hex characters (half a connection id), so ids differ
/// across restarts and nodes.
static PREFIX: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| crate::ws::new_connection_id(None)[..16].to_string());
static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The prefix and a counter: 32 hex characters, unique without a system call per request.
fn new_id() -> String {
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}{n:016x}", *PREFIX)
}

/// A caller's request id worth echoing: visible ASCII, short.
fn client_id(request: &Request) -> Option<HeaderValue> {
    let value = request.headers().get(&CLIENT_REQUEST_ID)?;
    let text = value.to_str().ok()?;
    (!text.is_empty()
        && text.len() <= MAX_CLIENT_REQUEST_ID
        && text.bytes().all(|b| b.is_ascii_graphic()))
    .then(|| value.clone())
}

/// Where the REST authentication writes who the caller is, for the trace (present only while
/// someone traces).
#[derive(Debug, Clone, Default)]
pub struct CallerSlot(pub std::sync::Arc<std::sync::OnceLock<String>>);

pub async fn layer(
    axum::extract::State(state): axum::extract::State<crate::state::AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let id = new_id();
    let echoed = client_id(&request);
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let span = tracing::info_span!("rest", request_id = %id);
    let started = std::time::Instant::now();
    // Only while someone traces: a slot the caller's authentication fills in.
    let caller = state.trace.on().then(|| {
        let slot = CallerSlot::default();
        request.extensions_mut().insert(slot.clone());
        slot
    });
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let seconds = started.elapsed().as_secs_f64();
    let ms = seconds * 1000.0;
    state
        .telemetry
        .rest(crate::telemetry::operation(&method, &path), status, seconds);
    span.in_scope(|| match status {
        500.. => tracing::warn!(%method, path, status, ms, "REST call failed"),
        400.. => tracing::debug!(%method, path, status, ms, "REST call refused"),
        _ => tracing::debug!(%method, path, status, ms, "REST call"),
    });
    state.trace.emit(|| crate::trace::TraceEvent::Rest {
        request_id: id.clone(),
        method: method.to_string(),
        path: path.clone(),
        status,
        ms,
        caller: caller.and_then(|slot| slot.0.get().cloned()),
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    if let Some(value) = echoed {
        response.headers_mut().insert(CLIENT_REQUEST_ID, value);
    }
    response
}
