//! Event handlers: CloudEvents (binary mode) over HTTP to app servers, with `ce-signature` made
//! from the keys current at send time, the abuse-protection handshake, connection state, bounded
//! time and concurrency per handler host, and bounded retries for the non-blocking events.

mod abuse;
pub mod hub_settings;

use crate::clock::rfc3339;
use crate::keys::Keys;
use crate::upstream::hub_settings::{EventHandler, HubProperties};
use bytes::Bytes;
use hubbub_proto::client_protocol::{DataType, Metadata};
use hubbub_proto::jwt::hmac_sha256;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Requests in flight to one handler host at a time.
pub const MAX_CONCURRENT_PER_HOST: usize = 64;
/// Largest response body read from a handler.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Largest `ce-connectionState` a handler may set.
pub const MAX_STATE_BYTES: usize = 8 * 1024;
/// Attempts for `connected` and `disconnected` events.
const NON_BLOCKING_ATTEMPTS: u32 = 3;
/// How long a passed or failed abuse-protection check is remembered.
const VALIDATION_OK_TTL: Duration = Duration::from_secs(3600);
const VALIDATION_FAILED_TTL: Duration = Duration::from_secs(10);

/// One CloudEvent to send: its type, name, body and id (kept across retries).
struct OutgoingEvent<'a> {
    ce_type: &'a str,
    name: &'a str,
    content_type: &'a str,
    body: Vec<u8>,
    id: u64,
    /// Sent as `x-webpubsub-metadata-<key>` headers.
    metadata: &'a [(String, String)],
}

/// The prefix of the headers that carry message metadata, to the app server and from it.
pub const METADATA_HEADER: &str = "x-webpubsub-metadata-";

/// The metadata in `headers` (`X-WebPubSub-Metadata-<key>`; several values of one key are
/// joined with commas), checked as clients' metadata is.
pub fn metadata_from(headers: &reqwest::header::HeaderMap) -> Result<Metadata, String> {
    metadata_with_prefix(headers, METADATA_HEADER)
}

/// The metadata in the headers named `<prefix><key>`.
fn metadata_with_prefix(
    headers: &reqwest::header::HeaderMap,
    prefix: &str,
) -> Result<Metadata, String> {
    let mut metadata: Metadata = Vec::new();
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix(prefix) else {
            continue;
        };
        let value = value
            .to_str()
            .map_err(|_| format!("the value of header {name} must be ASCII"))?;
        match metadata.iter_mut().find(|(k, _)| k == key) {
            Some((_, joined)) => {
                joined.push(',');
                joined.push_str(value);
            }
            None => metadata.push((key.to_string(), value.to_string())),
        }
    }
    hubbub_proto::client_protocol::check_metadata(&metadata)?;
    Ok(metadata)
}

/// What an event is about: one connection of one hub.
#[derive(Debug, Clone)]
pub struct EventContext {
    pub hub: Arc<str>,
    pub connection_id: Arc<str>,
    pub user_id: Option<Arc<str>>,
    pub subprotocol: Option<&'static str>,
    pub state: Option<String>,
    /// Headers of the connection's protocol (MQTT's `ce-physicalConnectionId`, `ce-sessionId`).
    pub headers: Vec<(&'static str, String)>,
    /// The prefix of the headers carrying a user event's metadata, both ways
    /// (`x-webpubsub-metadata-`; MQTT user properties: `mqtt-`).
    pub metadata_header: &'static str,
}

impl EventContext {
    /// The context of a connection, with its current upstream state.
    pub fn of(connection: &crate::dataplane::connection::Connection) -> Self {
        Self {
            hub: Arc::clone(&connection.hub),
            connection_id: Arc::clone(&connection.id),
            user_id: connection.user_id.clone(),
            subprotocol: connection.protocol.name(),
            state: connection.state().upstream_state.clone(),
            headers: connection.protocol.event_headers(),
            metadata_header: connection.protocol.metadata_header(),
        }
    }
}

/// The body of a `connect` event.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnectBody {
    pub claims: Map<String, Value>,
    pub query: HashMap<String, Vec<String>>,
    pub headers: HashMap<String, Vec<String>>,
    pub subprotocols: Vec<String>,
    #[serde(rename = "clientCertificates")]
    pub client_certificates: Vec<Value>,
    /// MQTT clients: what their CONNECT says (`protocolVersion`, `cleanStart`, `username`,
    /// `password` in base64, `userProperties`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<Value>,
}

/// What the app server decided about a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectResponse {
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default, alias = "subProtocol")]
    pub subprotocol: Option<String>,
    /// MQTT clients: user properties for the CONNACK.
    #[serde(default)]
    pub mqtt: Option<MqttConnectResponse>,
}

/// The MQTT part of a connect response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MqttConnectResponse {
    #[serde(default)]
    pub user_properties: Vec<NameValue>,
}

/// An MQTT user property as event bodies carry it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct NameValue {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectOutcome {
    /// 2xx: accept, with what the response set (and the new connection state, if any).
    Accept {
        response: ConnectResponse,
        state: Option<String>,
    },
    /// 4xx: the client gets this status.
    Reject { status: u16, message: String },
    /// Anything else (5xx, timeout, bad body, abuse protection failed): the client gets 500.
    Fail(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventOutcome {
    /// 2xx: an optional body to send back to the client, and the new connection state.
    Ok {
        reply: Option<(DataType, Bytes)>,
        state: Option<String>,
        /// From the response's `X-WebPubSub-Metadata-*` headers, for the reply.
        metadata: Metadata,
        /// The handler's status (2xx).
        status: u16,
    },
    Failed(String),
}

#[derive(Debug, Clone)]
enum Validation {
    Passed(Instant),
    Failed(Instant, String),
}

/// Handler problems kept at most (one per hub and handler).
pub const MAX_PROBLEMS: usize = 1024;
/// Longest URL shown in a problem or a log line (characters).
const MAX_SHOWN_URL: usize = 256;
/// Longest reason shown in a problem or a log line (characters).
const MAX_SHOWN_REASON: usize = 512;

/// The problem map's key: the hub and the handler's template, not the URL of one event.
fn problem_key(handler: &EventHandler, hub: &str) -> String {
    format!("{hub}\n{}", handler.url_template)
}

/// At most `max` characters of `text`, with `…` when cut.
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// A handler failure operators can see in the admin API.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HandlerProblem {
    pub url: String,
    pub reason: String,
    pub at: String,
}

pub struct Upstream {
    http: reqwest::Client,
    keys: Keys,
    /// `WebHook-Request-Origin`: the public endpoint's host, no scheme, no port.
    origin: String,
    next_id: AtomicU64,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
    validations: Mutex<HashMap<String, Validation>>,
    problems: Mutex<HashMap<String, HandlerProblem>>,
    /// Where calls are traced and counted (none in tools and tests that need neither).
    observed: Option<(crate::trace::Tracer, Arc<crate::telemetry::Telemetry>)>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// `sha256=<hex>,sha256=<hex>`: HMAC-SHA256 of the connection id with each access key.
pub fn signature(primary: &str, secondary: &str, connection_id: &str) -> String {
    let hex = |key: &str| {
        hmac_sha256(key.as_bytes(), connection_id.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    format!("sha256={},sha256={}", hex(primary), hex(secondary))
}

fn content_type(data_type: DataType) -> &'static str {
    match data_type {
        DataType::Text => "text/plain; charset=utf-8",
        DataType::Json => "application/json; charset=utf-8",
        DataType::Binary => "application/octet-stream",
        DataType::Protobuf => "application/x-protobuf",
    }
}

fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())].to_ascii_lowercase()
}

impl Upstream {
    pub fn new(keys: Keys, origin: String, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            http,
            keys,
            origin,
            next_id: AtomicU64::new(1),
            hosts: Mutex::default(),
            validations: Mutex::default(),
            problems: Mutex::default(),
            observed: None,
        }
    }

    /// Puts every call to an event handler in `trace` and counts it in `telemetry`.
    pub fn observed(
        mut self,
        trace: crate::trace::Tracer,
        telemetry: Arc<crate::telemetry::Telemetry>,
    ) -> Self {
        self.observed = Some((trace, telemetry));
        self
    }

    /// Recent failures, one per hub and handler (abuse protection, errors, timeouts), sorted by
    /// URL.
    pub fn problems(&self) -> Vec<HandlerProblem> {
        let mut list: Vec<_> = self
            .problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        list.sort_by(|a, b| a.url.cmp(&b.url));
        list
    }

    /// Records a handler's latest failure: one entry per hub and handler (whatever the event in
    /// its URL), at most [`MAX_PROBLEMS`] in all, and the URL and reason cut short, so that no
    /// client can grow the map or the log.
    fn problem(&self, handler: &EventHandler, hub: &str, url: &str, reason: &str) {
        // Handler URLs may carry a secret in the query (`?code=…`): show them without it.
        let shown = shorten(url.split(['?', '#']).next().unwrap_or(url), MAX_SHOWN_URL);
        let reason = shorten(reason, MAX_SHOWN_REASON);
        tracing::warn!(url = %shown, reason = %reason, "event handler problem");
        let now = self.keys.clock().now_millis();
        let mut problems = self.problems.lock().unwrap_or_else(|p| p.into_inner());
        let key = problem_key(handler, hub);
        if problems.len() >= MAX_PROBLEMS && !problems.contains_key(&key) {
            return;
        }
        problems.insert(
            key,
            HandlerProblem {
                url: shown,
                reason,
                at: rfc3339(now),
            },
        );
    }

    /// The current problem of `handler` in `hub`, if it has one.
    pub fn problem_of(&self, handler: &EventHandler, hub: &str) -> Option<HandlerProblem> {
        self.problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&problem_key(handler, hub))
            .cloned()
    }

    fn clear_problem(&self, handler: &EventHandler, hub: &str) {
        self.problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&problem_key(handler, hub));
    }

    /// A new `ce-id`; retries of one event keep theirs.
    fn new_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn host_limit(&self, url: &str) -> Arc<Semaphore> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            hosts
                .entry(host_of(url))
                .or_insert_with(|| Arc::new(Semaphore::new(MAX_CONCURRENT_PER_HOST))),
        )
    }

    /// Sends one CloudEvent (see [`Self::exchange`]), puts the call in the live trace (the
    /// event, the status or the failure, how long it took) and counts it.
    async fn post(
        &self,
        handler: &EventHandler,
        ctx: &EventContext,
        event: OutgoingEvent<'_>,
    ) -> Result<(u16, reqwest::header::HeaderMap, Bytes), String> {
        let name = event.name.to_string();
        let system = !event.ce_type.starts_with("azure.webpubsub.user.");
        let started = std::time::Instant::now();
        let result = self.exchange(handler, ctx, event).await;
        if let Some((trace, telemetry)) = &self.observed {
            let seconds = started.elapsed().as_secs_f64();
            let outcome = match &result {
                Ok((200..=299, _, _)) => "success",
                Ok(_) => "refused",
                Err(_) => "failed",
            };
            let label = crate::telemetry::event_label(system, &name);
            telemetry.event_handler(&ctx.hub, label, outcome, seconds);
            trace.emit(|| crate::trace::TraceEvent::EventHandler {
                hub: ctx.hub.to_string(),
                connection_id: ctx.connection_id.to_string(),
                name,
                status: result.as_ref().ok().map(|(status, _, _)| *status),
                error: result.as_ref().err().cloned(),
                ms: seconds * 1000.0,
            });
        }
        result
    }

    /// Sends one CloudEvent; returns status, headers and body (bounded).
    async fn exchange(
        &self,
        handler: &EventHandler,
        ctx: &EventContext,
        event: OutgoingEvent<'_>,
    ) -> Result<(u16, reqwest::header::HeaderMap, Bytes), String> {
        let OutgoingEvent {
            ce_type,
            name: event_name,
            content_type,
            body,
            id,
            metadata,
        } = event;
        self.validate(handler, &ctx.hub).await?;
        let url = handler.url(&ctx.hub, event_name);
        let ring = self.keys.current();
        let mut request = self
            .http
            .post(&url)
            .header("ce-specversion", "1.0")
            .header("ce-awpsversion", "1.0")
            .header("ce-type", ce_type)
            .header(
                "ce-source",
                format!("/hubs/{}/client/{}", ctx.hub, ctx.connection_id),
            )
            .header("ce-id", id.to_string())
            .header("ce-time", rfc3339(self.keys.clock().now_millis()))
            .header(
                "ce-signature",
                signature(
                    ring.primary.value.expose(),
                    ring.secondary.value.expose(),
                    &ctx.connection_id,
                ),
            )
            .header("ce-connectionId", &*ctx.connection_id)
            .header("ce-hub", &*ctx.hub)
            .header("ce-eventName", event_name)
            .header("WebHook-Request-Origin", &self.origin)
            .header("Content-Type", content_type)
            .body(body);
        if let Some(user) = &ctx.user_id {
            request = request.header("ce-userId", &**user);
        }
        if let Some(protocol) = ctx.subprotocol {
            request = request.header("ce-subprotocol", protocol);
        }
        if let Some(state) = &ctx.state {
            request = request.header("ce-connectionState", state);
        }
        for (name, value) in &ctx.headers {
            request = request.header(*name, value);
        }
        for (key, value) in metadata {
            request = request.header(
                format!("{}{}", ctx.metadata_header, key.to_ascii_lowercase()),
                value,
            );
        }
        let limit = self.host_limit(&url);
        let _permit = limit
            .acquire()
            .await
            .map_err(|_| "shutting down".to_string())?;
        let mut response = request.send().await.map_err(|e| {
            let reason = describe(&e);
            self.problem(handler, &ctx.hub, &url, &reason);
            reason
        })?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                let reason =
                    format!("the handler's response is larger than {MAX_RESPONSE_BYTES} bytes");
                self.problem(handler, &ctx.hub, &url, &reason);
                return Err(reason);
            }
            body.extend_from_slice(&chunk);
        }
        if (200..300).contains(&status) {
            self.clear_problem(handler, &ctx.hub);
        } else if !(400..500).contains(&status) || ce_type != "azure.webpubsub.sys.connect" {
            self.problem(
                handler,
                &ctx.hub,
                &url,
                &format!("the handler answered {status}"),
            );
        }
        Ok((status, headers, Bytes::from(body)))
    }

    /// The new connection state from a response: `None` keeps the current one.
    fn state_from(headers: &reqwest::header::HeaderMap) -> Result<Option<String>, String> {
        let mut values = headers.get_all("ce-connectionState").iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err("the handler set ce-connectionState more than once".into());
        }
        if value.len() > MAX_STATE_BYTES {
            return Err(format!(
                "the handler's ce-connectionState is larger than {MAX_STATE_BYTES} bytes"
            ));
        }
        value
            .to_str()
            .map(|s| Some(s.to_string()))
            .map_err(|_| "ce-connectionState is not text".into())
    }

    /// The blocking `connect` event; `None` when no handler takes it.
    pub async fn connect(
        &self,
        settings: &HubProperties,
        ctx: &EventContext,
        body: &ConnectBody,
    ) -> Option<ConnectOutcome> {
        let handler = settings.system_handler("connect")?;
        let json = serde_json::to_vec(body).unwrap_or_default();
        let outcome = match self
            .post(
                handler,
                ctx,
                OutgoingEvent {
                    ce_type: "azure.webpubsub.sys.connect",
                    name: "connect",
                    content_type: "application/json; charset=utf-8",
                    body: json,
                    metadata: &[],
                    id: self.new_id(),
                },
            )
            .await
        {
            Err(reason) => ConnectOutcome::Fail(reason),
            Ok((status, headers, body)) if (200..300).contains(&status) => {
                let state = match Self::state_from(&headers) {
                    Ok(state) => state,
                    Err(reason) => return Some(ConnectOutcome::Fail(reason)),
                };
                if body.iter().all(u8::is_ascii_whitespace) {
                    ConnectOutcome::Accept {
                        response: ConnectResponse::default(),
                        state,
                    }
                } else {
                    match serde_json::from_slice::<ConnectResponse>(&body) {
                        Ok(response) => ConnectOutcome::Accept { response, state },
                        Err(e) => ConnectOutcome::Fail(format!(
                            "the handler's connect response is not the expected JSON: {e}"
                        )),
                    }
                }
            }
            Ok((status, _, body)) if (400..500).contains(&status) => ConnectOutcome::Reject {
                status,
                message: String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
            },
            Ok((status, _, _)) => {
                ConnectOutcome::Fail(format!("the handler answered connect with {status}"))
            }
        };
        if let ConnectOutcome::Fail(reason) = &outcome {
            self.problem(handler, &ctx.hub, &handler.url(&ctx.hub, "connect"), reason);
        }
        Some(outcome)
    }

    /// A user event (`event` message, `invoke`, or a simple client's frame); `None` when no
    /// handler takes it.
    pub async fn user_event(
        &self,
        settings: &HubProperties,
        ctx: &EventContext,
        event: &str,
        data_type: DataType,
        data: Vec<u8>,
        metadata: &[(String, String)],
    ) -> Option<EventOutcome> {
        let handler = settings.user_handler(event)?;
        let ce_type = format!("azure.webpubsub.user.{event}");
        Some(
            match self
                .post(
                    handler,
                    ctx,
                    OutgoingEvent {
                        ce_type: &ce_type,
                        name: event,
                        content_type: content_type(data_type),
                        body: data,
                        id: self.new_id(),
                        metadata,
                    },
                )
                .await
            {
                Err(reason) => EventOutcome::Failed(reason),
                Ok((status, headers, body)) if (200..300).contains(&status) => {
                    let state = match Self::state_from(&headers) {
                        Ok(state) => state,
                        Err(reason) => return Some(EventOutcome::Failed(reason)),
                    };
                    let metadata = match metadata_with_prefix(&headers, ctx.metadata_header) {
                        Ok(metadata) => metadata,
                        Err(reason) => {
                            return Some(EventOutcome::Failed(format!(
                                "the handler's response metadata: {reason}"
                            )))
                        }
                    };
                    if body.is_empty() {
                        EventOutcome::Ok {
                            reply: None,
                            state,
                            metadata,
                            status,
                        }
                    } else {
                        let media = headers
                            .get(reqwest::header::CONTENT_TYPE)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.split(';').next())
                            .map(|v| v.trim().to_ascii_lowercase())
                            .unwrap_or_default();
                        let reply_type = match media.as_str() {
                            "text/plain" if std::str::from_utf8(&body).is_ok() => DataType::Text,
                            "application/json"
                                if serde_json::from_slice::<serde::de::IgnoredAny>(&body)
                                    .is_ok() =>
                            {
                                DataType::Json
                            }
                            "application/x-protobuf"
                                if hubbub_proto::client_protocol::check_protobuf_any(&body)
                                    .is_ok() =>
                            {
                                DataType::Protobuf
                            }
                            "application/json" | "text/plain" | "application/x-protobuf" => {
                                return Some(EventOutcome::Failed(format!(
                                    "the handler's {media} response does not parse"
                                )))
                            }
                            _ => DataType::Binary,
                        };
                        EventOutcome::Ok {
                            reply: Some((reply_type, body)),
                            state,
                            metadata,
                            status,
                        }
                    }
                }
                Ok((status, _, body)) => EventOutcome::Failed(format!(
                    "the event handler answered {status}{}",
                    if body.is_empty() {
                        String::new()
                    } else {
                        format!(
                            ": {}",
                            String::from_utf8_lossy(&body[..body.len().min(256)])
                        )
                    }
                )),
            },
        )
    }

    /// `connected`, `disconnected` and the group presence events: sent in the background,
    /// retried (bounded) on failure.
    pub fn notify(
        self: &Arc<Self>,
        settings: &HubProperties,
        ctx: EventContext,
        event: &'static str,
        body: Value,
    ) {
        let Some(handler) = settings.system_handler(event).cloned() else {
            return;
        };
        let upstream = Arc::clone(self);
        tokio::spawn(async move { upstream.send_system(&handler, ctx, event, body).await });
    }

    /// A non-blocking system event to `handler`, sent now: up to three attempts (0.5 s, 1 s
    /// apart) on 5xx or network errors.
    pub async fn send_system(
        &self,
        handler: &EventHandler,
        ctx: EventContext,
        event: &'static str,
        body: Value,
    ) {
        let upstream = self;
        // Group presence events have a type of their own.
        let family = if matches!(event, "joined" | "left") {
            "gp"
        } else {
            "sys"
        };
        let ce_type = format!("azure.webpubsub.{family}.{event}");
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let id = upstream.new_id();
        for attempt in 0..NON_BLOCKING_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
            }
            match upstream
                .post(
                    handler,
                    &ctx,
                    OutgoingEvent {
                        ce_type: &ce_type,
                        name: event,
                        content_type: "application/json",
                        body: json.clone(),
                        id,
                        metadata: &[],
                    },
                )
                .await
            {
                Ok((status, _, _)) if status < 500 => return,
                Ok(_) | Err(_) => continue,
            }
        }
        tracing::warn!(hub = %ctx.hub, connection_id = %ctx.connection_id, event, "event not delivered after retries");
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "the event handler did not answer in time".into()
    } else if e.is_connect() {
        "cannot connect to the event handler".into()
    } else {
        "the request to the event handler failed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_test_vectors() {
        // From the .NET SDK tests: one key.
        let one = hmac_sha256(
            b"7aab239577fd4f24bc919802fb629f5f",
            b"0f9c97a2f0bf4706afe87a14e0797b11",
        );
        let hex: String = one.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "7767effcb3946f3e1de039df4b986ef02c110b1469d02c0a06f41b3b727ab561"
        );
        // Primary then secondary, comma-separated, lower-case hex, no spaces.
        assert_eq!(
            signature(
                "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH",
                "abcdefghijklmnopqrstuvwxyz0123456789abcdefgh",
                "0f9c97a2f0bf4706afe87a14e0797b11"
            ),
            "sha256=8805d739a12d46f22bcb15382a8c1c2bf38ae8f04566017bd613d5ef47cafe2c,sha256=3a56e6c1afb7a7afba9a054ef8589e97442e7bef351f92ebc010953c3848a562"
        );
    }

    #[test]
    fn hosts() {
        assert_eq!(host_of("http://Example.com:8080/a?b"), "example.com:8080");
        assert_eq!(host_of("https://h"), "h");
    }
}
