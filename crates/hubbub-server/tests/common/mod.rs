//! The one test helper: starts the real server in-process on port 0 with a temporary data
//! directory and a controllable clock, and offers the requests tests need.
#![allow(dead_code)]

pub mod app_server;

use hubbub_proto::jwt;
use hubbub_server::clock::{Clock, ManualClock};
use hubbub_server::{Config, RunningServer, Settings};
use serde_json::{json, Value};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub struct TestServer {
    pub server: Option<RunningServer>,
    pub dir: Arc<tempfile::TempDir>,
    pub clock: Arc<ManualClock>,
    pub http: reqwest::Client,
    settings: Settings,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(Settings::default()).await
    }

    pub async fn start_with(settings: Settings) -> Self {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        Self::start_in(dir, settings, ManualClock::starting_now()).await
    }

    async fn start_in(
        dir: Arc<tempfile::TempDir>,
        settings: Settings,
        clock: Arc<ManualClock>,
    ) -> Self {
        let config = Self::config(dir.path(), settings.clone(), clock.clone());
        let server = hubbub_server::start(config).await.expect("server starts");
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(20))
            .build()
            .expect("http client");
        Self {
            server: Some(server),
            dir,
            clock,
            http,
            settings,
        }
    }

    pub fn config(data_dir: &Path, settings: Settings, clock: Arc<ManualClock>) -> Config {
        let base = Settings {
            data_dir: Some(data_dir.join("data")),
            listen: Some("127.0.0.1:0".into()),
            admin_listen: Some("127.0.0.1:0".into()),
            ..Settings::default()
        };
        let mut config = settings.over(base).validate().expect("valid settings");
        config.clock = clock;
        config
    }

    /// Stops the server gracefully and starts a new one on the same data directory.
    pub async fn restart(mut self) -> Self {
        let server = self.server.take().expect("running");
        server.shutdown().await;
        Self::start_in(
            Arc::clone(&self.dir),
            self.settings.clone(),
            Arc::clone(&self.clock),
        )
        .await
    }

    pub fn running(&self) -> &RunningServer {
        self.server.as_ref().expect("running")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn scheme(&self) -> &'static str {
        if self.running().tls {
            "https"
        } else {
            "http"
        }
    }

    /// URL on the public listener (by IP, as a client would).
    pub fn public_url(&self, path_and_query: &str) -> String {
        format!(
            "{}://{}{path_and_query}",
            self.scheme(),
            self.running().public_addr
        )
    }

    /// The connection-string endpoint, e.g. `http://localhost:PORT`.
    pub fn endpoint(&self) -> String {
        self.running().state.primary_endpoint()
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running().admin_addr)
    }

    pub fn admin_token(&self) -> String {
        self.running()
            .state
            .admin_token
            .current()
            .expose()
            .to_string()
    }

    pub fn key(&self, slot: hubbub_proto::keys::KeySlot) -> String {
        self.running()
            .state
            .keys
            .current()
            .slot(slot)
            .value
            .expose()
            .to_string()
    }

    pub fn now(&self) -> i64 {
        self.clock.now_secs()
    }

    /// A REST token like the JS SDK makes: `aud` = the endpoint plus the path and query.
    pub fn rest_token(&self, key: &str, path_and_query: &str) -> String {
        let now = self.now();
        sign(
            json!({"iat": now, "exp": now + 3600, "aud": format!("{}{path_and_query}", self.endpoint())}),
            key,
        )
    }

    /// `POST /api/hubs/{hub}/:send` with a text body and the given bearer token.
    pub async fn send_to_all(&self, hub: &str, token: &str) -> reqwest::Response {
        let path = format!("/api/hubs/{hub}/:send?api-version=2024-12-01");
        self.http
            .post(self.public_url(&path))
            .bearer_auth(token)
            .header("content-type", "text/plain")
            .body("hello")
            .send()
            .await
            .expect("request sent")
    }

    /// Sends to all with a fresh token signed by `key`; returns the status.
    pub async fn send_with_key(&self, key: &str) -> u16 {
        let token = self.rest_token(key, "/api/hubs/chat/:send?api-version=2024-12-01");
        self.send_to_all("chat", &token).await.status().as_u16()
    }

    /// A request to the public listener with a REST token signed by `key` for it.
    pub fn rest_request(
        &self,
        method: reqwest::Method,
        key: &str,
        path_and_query: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.public_url(path_and_query))
            .bearer_auth(self.rest_token(key, path_and_query))
    }

    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.admin_url(path))
            .bearer_auth(self.admin_token())
            .send()
            .await
            .expect("admin request sent")
    }

    /// `GET url` with a bearer token: the body as JSON.
    pub async fn get_json(&self, url: &str, token: &str) -> Value {
        let response = self
            .http
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent");
        response.json().await.expect("a JSON body")
    }

    /// `GET` on the admin API: the body as JSON.
    pub async fn admin_json(&self, path: &str) -> Value {
        self.get_json(&self.admin_url(path), &self.admin_token())
            .await
    }

    /// `GET` on the admin API: the body as text.
    pub async fn admin_text(&self, path: &str) -> String {
        self.admin_get(path)
            .await
            .text()
            .await
            .expect("a text body")
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.admin_url(path))
            .bearer_auth(self.admin_token())
            .json(&body)
            .send()
            .await
            .expect("admin request sent")
    }

    pub async fn regenerate(&self, key_type: &str) -> Value {
        let response = self
            .admin_post("/admin/keys/regenerate", json!({ "keyType": key_type }))
            .await;
        assert_eq!(response.status(), 200, "regenerate {key_type}");
        response.json().await.expect("json")
    }

    /// A new TCP connection to the public listener, for speaking (or half-speaking) HTTP by hand.
    pub async fn raw_public(&self) -> tokio::net::TcpStream {
        tokio::net::TcpStream::connect(self.running().public_addr)
            .await
            .expect("TCP connect")
    }

    /// The value of one series of `/metrics` (`name{labels}` exactly as rendered), read on a
    /// connection of its own (so an idle timeout never meets a pooled one).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(20))
            .build()
            .expect("http client");
        let text = client
            .get(self.admin_url("/metrics"))
            .bearer_auth(self.admin_token())
            .send()
            .await
            .expect("metrics request sent")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    }

    pub async fn keys(&self) -> Value {
        let response = self.admin_get("/admin/keys").await;
        assert_eq!(response.status(), 200);
        response.json().await.expect("json")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.trigger_shutdown();
        }
    }
}

pub fn sign(claims: Value, key: &str) -> String {
    jwt::sign(claims.as_object().expect("object"), key.as_bytes(), None)
}

/// Asserts an Azure-shaped error: status, JSON body with `code` and `message`, and the
/// `x-ms-error-code` header equal to the code. Returns the body.
pub async fn assert_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status);
    let header = response
        .headers()
        .get("x-ms-error-code")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = response.json().await.expect("JSON error body");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(header.as_deref(), Some(code));
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    body
}

/// Sends `GET path` on a raw keep-alive HTTP/1.1 connection and reads the whole response
/// (within 10 s): its status and body. None when the server closed the connection instead.
pub async fn raw_get(stream: &mut tokio::net::TcpStream, path: &str) -> Option<(u16, String)> {
    use tokio::io::AsyncWriteExt;
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    tokio::time::timeout(Duration::from_secs(10), read_response(stream))
        .await
        .expect("a response or a close within 10 s")
}

/// Reads one HTTP/1.1 response with a `content-length`: its status and body.
pub async fn read_response(stream: &mut tokio::net::TcpStream) -> Option<(u16, String)> {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                let status = head.split_whitespace().nth(1)?.parse().ok()?;
                return Some((status, body.to_string()));
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Waits (at most `limit`) until the server closes `stream`; false if it is still open then.
/// Anything the server sends before closing is discarded.
pub async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Polls `check` until it returns true, for at most `limit`.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A raw WebSocket test client.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl TestServer {
    /// A client token like the SDKs make: `aud` = endpoint + `/client/hubs/{hub}`.
    pub fn client_token(
        &self,
        key: &str,
        hub: &str,
        user: Option<&str>,
        roles: &[&str],
        groups: &[&str],
    ) -> String {
        let now = self.now();
        let mut claims = json!({"aud": format!("{}/client/hubs/{hub}", self.endpoint()), "iat": now, "exp": now + 3600});
        if let Some(user) = user {
            claims["sub"] = json!(user);
        }
        if !roles.is_empty() {
            claims["role"] = json!(roles);
        }
        if !groups.is_empty() {
            claims["webpubsub.group"] = json!(groups);
        }
        sign(claims, key)
    }

    pub fn ws_url(&self, path_and_query: &str) -> String {
        format!("ws://{}{path_and_query}", self.running().public_addr)
    }

    /// Opens a WebSocket; Err carries the HTTP status of a refused upgrade.
    pub async fn ws_connect(
        &self,
        path_and_query: &str,
        protocol: Option<&str>,
    ) -> Result<(Ws, Option<String>), u16> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = self
            .ws_url(path_and_query)
            .into_client_request()
            .expect("request");
        if let Some(protocol) = protocol {
            request
                .headers_mut()
                .insert("sec-websocket-protocol", protocol.parse().expect("header"));
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, response)) => {
                let chosen = response
                    .headers()
                    .get("sec-websocket-protocol")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                Ok((ws, chosen))
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(e) => panic!("websocket connect failed: {e}"),
        }
    }

    /// Connects a JSON-protocol client and returns it with its `connected` message.
    pub async fn json_client(&self, hub: &str, token: &str, protocol: &str) -> (Ws, Value) {
        let (mut ws, chosen) = self
            .ws_connect(
                &format!("/client/hubs/{hub}?access_token={token}"),
                Some(protocol),
            )
            .await
            .expect("upgrade accepted");
        assert_eq!(chosen.as_deref(), Some(protocol));
        let connected = next_json(&mut ws).await;
        assert_eq!(connected["event"], "connected", "{connected}");
        (ws, connected)
    }
}

/// The next text frame as JSON (skipping pings), within 10 s.
pub async fn next_json(ws: &mut Ws) -> Value {
    match next_frame(ws).await {
        Some(tokio_tungstenite::tungstenite::Message::Text(text)) => {
            serde_json::from_str(&text).expect("JSON frame")
        }
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// The next non-ping frame within 10 s; None when the stream ended.
pub async fn next_frame(ws: &mut Ws) -> Option<tokio_tungstenite::tungstenite::Message> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("a frame within 10 s");
        match frame {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(m)) => return Some(m),
            Some(Err(_)) | None => return None,
        }
    }
}

/// True when nothing but pings arrives for `wait`.
pub async fn silent_for(ws: &mut Ws, wait: Duration) -> bool {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return true,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(_) => return false,
        }
    }
}

pub async fn send_json(ws: &mut Ws, value: Value) {
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        value.to_string().into(),
    ))
    .await
    .expect("send");
}
