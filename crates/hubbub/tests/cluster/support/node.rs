//! One cluster node: a `hubbub serve --cluster` process with its own data directory, and the
//! requests the scenarios make of it (admin API, signed REST calls, WebSocket clients).

use super::{now, sign, Client, Nats};
use crate::common::{get_json, Hubbub};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const JSON_PROTOCOL: &str = "json.webpubsub.azure.v1";
const RELIABLE_PROTOCOL: &str = "json.reliable.webpubsub.azure.v1";

/// One node: its process and its own data directory.
pub struct Node {
    pub hubbub: Option<Hubbub>,
    _dir: tempfile::TempDir,
    pub id: String,
    /// What `serve` was started with, for a restart.
    args: Vec<String>,
    http: reqwest::Client,
}

impl Node {
    pub fn start(nats: &Nats, id: &str) -> Self {
        Self::start_with(nats, id, "")
    }

    /// Starts a node with a config file holding `toml`.
    pub fn start_with(nats: &Nats, id: &str, toml: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("hubbub.toml");
        std::fs::write(&config, toml).unwrap();
        let url = nats.url();
        let args = [
            "--cluster",
            &url,
            "--node-id",
            id,
            "--config",
            config.to_str().unwrap(),
        ];
        let node = Self::launch(dir, id, &args);
        let banner = &node.running().banner;
        assert!(
            banner
                .iter()
                .any(|l| l.starts_with(&format!("cluster node: {id} "))),
            "{banner:?}"
        );
        node
    }

    /// Starts `serve` with `args`, its data in `dir`.
    pub fn launch(dir: tempfile::TempDir, id: &str, args: &[&str]) -> Self {
        let secret = super::secret_file(dir.path(), super::CLUSTER_SECRET);
        let mut args = args.to_vec();
        args.extend(["--cluster-secret-file", secret.to_str().unwrap()]);
        let hubbub = Hubbub::start_with(&dir.path().join("data"), &args, &[])
            .unwrap_or_else(|stderr| panic!("node {id} did not start: {stderr}"));
        Self {
            hubbub: Some(hubbub),
            _dir: dir,
            id: id.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        }
    }

    /// Stops the node (SIGTERM) and starts it again with the same data directory and settings.
    pub fn restart(&mut self) {
        let data_dir = self.running().data_dir.clone();
        self.hubbub.take().unwrap().terminate();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let hubbub = Hubbub::start_with(&data_dir, &args, &[])
            .unwrap_or_else(|stderr| panic!("node {} did not restart: {stderr}", self.id));
        self.hubbub = Some(hubbub);
    }

    /// Stops the node and returns what it wrote to stderr.
    pub fn stop_for_stderr(mut self) -> String {
        self.hubbub
            .take()
            .map(Hubbub::stop_for_stderr)
            .unwrap_or_default()
    }

    pub fn running(&self) -> &Hubbub {
        self.hubbub.as_ref().expect("running")
    }

    pub fn port(&self) -> String {
        self.running()
            .public_addr
            .rsplit(':')
            .next()
            .unwrap()
            .to_string()
    }

    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.running().data_dir.join("admin-token"))
            .expect("admin token file")
            .trim()
            .to_string()
    }

    /// An admin API request with the node's admin token.
    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.running().admin_url()))
            .bearer_auth(self.admin_token());
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("admin request")
    }

    /// `GET` on the admin API: the body as JSON.
    pub async fn admin_json(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.running().admin_url());
        get_json(&self.http, &url, Some(&self.admin_token())).await
    }

    /// The node's Prometheus metrics.
    pub async fn metrics(&self) -> String {
        let response = self.admin(Method::GET, "/metrics", None).await;
        response.text().await.unwrap()
    }

    /// The node's audit log (up to 500 events).
    pub async fn audit(&self) -> Value {
        self.admin_json("/admin/audit?limit=500").await
    }

    pub async fn keys(&self) -> Value {
        let response = self.admin(Method::GET, "/admin/keys", None).await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    pub async fn primary(&self) -> (String, u64) {
        let keys = self.keys().await;
        (
            keys["primaryKey"].as_str().unwrap().to_string(),
            keys["primary"]["version"].as_u64().unwrap(),
        )
    }

    /// `POST /admin/keys/regenerate`: the status and the body.
    pub async fn regenerate(&self, key_type: &str) -> (u16, Value) {
        let body = json!({ "keyType": key_type });
        let response = self
            .admin(Method::POST, "/admin/keys/regenerate", Some(body))
            .await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A request to the public listener with a REST token signed with `key` as the SDKs sign it.
    fn signed(&self, key: &str, method: Method, path_and_query: &str) -> reqwest::RequestBuilder {
        let path = path_and_query.split('?').next().unwrap();
        let aud = format!("http://localhost:{}{path}", self.port());
        let token = sign(json!({ "aud": aud, "exp": now() + 600 }), key);
        self.http
            .request(
                method,
                format!("http://{}{path_and_query}", self.running().public_addr),
            )
            .bearer_auth(token)
    }

    /// A REST request signed with `key` as the SDKs sign it; returns the status.
    pub async fn rest(&self, key: &str, path_and_query: &str, body: &str) -> u16 {
        let response = self
            .signed(key, Method::POST, path_and_query)
            .header("content-type", "text/plain")
            .body(body.to_string())
            .send()
            .await
            .expect("REST request");
        response.status().as_u16()
    }

    /// Any REST call signed with `key`: the status and the body.
    pub async fn call(
        &self,
        key: &str,
        method: Method,
        path_and_query: &str,
        json_body: Option<Value>,
    ) -> (u16, String) {
        let mut request = self.signed(key, method, path_and_query);
        if let Some(body) = json_body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("REST request");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// A REST call on hub `chat`: `path` after `/api/hubs/chat/`, with or without a query.
    pub async fn chat(&self, key: &str, method: Method, path: &str) -> u16 {
        let sep = if path.contains('?') { '&' } else { '?' };
        let path = format!("/api/hubs/chat/{path}{sep}api-version=2024-12-01");
        self.call(key, method, &path, None).await.0
    }

    pub async fn broadcast(&self, key: &str, body: &str) -> u16 {
        self.rest(key, "/api/hubs/chat/:send?api-version=2024-12-01", body)
            .await
    }

    /// The `aud` of a client token for hub `chat` on this node.
    fn client_audience(&self) -> String {
        format!("http://localhost:{}/client/hubs/chat", self.port())
    }

    /// Opens a WebSocket to hub `chat` with `query` and `protocol` (the upgrade must succeed).
    async fn open(&self, query: &str, protocol: &str) -> Client {
        let url = format!(
            "ws://{}/client/hubs/chat?{query}",
            self.running().public_addr
        );
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("sec-websocket-protocol", protocol.parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("client connects");
        Client { ws }
    }

    /// A `json.reliable.webpubsub.azure.v1` client of `user` in `groups`; returns it, its
    /// connection id and its reconnection token.
    pub async fn reliable_client(
        &self,
        key: &str,
        user: &str,
        groups: &[&str],
    ) -> (Client, String, String) {
        let token = sign(
            json!({"aud": self.client_audience(), "exp": now() + 600, "sub": user, "webpubsub.group": groups}),
            key,
        );
        let mut client = self
            .open(&format!("access_token={token}"), RELIABLE_PROTOCOL)
            .await;
        let connected = client.next_json().await.unwrap();
        assert_eq!(connected["event"], "connected", "{connected}");
        (
            client,
            connected["connectionId"].as_str().unwrap().to_string(),
            connected["reconnectionToken"].as_str().unwrap().to_string(),
        )
    }

    /// A reliable client's recovery reconnect to this node (the upgrade itself always succeeds).
    pub async fn recover(&self, id: &str, reconnection_token: &str) -> Client {
        let query = format!(
            "awps_connection_id={id}&awps_reconnection_token={}",
            reconnection_token
                .replace('+', "%2B")
                .replace('/', "%2F")
                .replace('=', "%3D")
        );
        self.open(&query, RELIABLE_PROTOCOL).await
    }

    /// A `json.webpubsub.azure.v1` client of `user` in `groups`; returns it and its connection id.
    pub async fn client(&self, key: &str, user: &str, groups: &[&str]) -> (Client, String) {
        let token = sign(
            json!({
                "aud": self.client_audience(),
                "exp": now() + 600,
                "sub": user,
                "webpubsub.group": groups,
                "role": ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"],
            }),
            key,
        );
        let mut client = self
            .open(&format!("access_token={token}"), JSON_PROTOCOL)
            .await;
        let connected = client.next_json().await.expect("connected message");
        assert_eq!(connected["event"], "connected", "{connected}");
        let id = connected["connectionId"].as_str().unwrap().to_string();
        (client, id)
    }
}
