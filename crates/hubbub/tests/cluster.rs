//! Cluster mode against a real NATS JetStream server (`nats-server -js` on a free loopback port,
//! store in a temporary directory) and real `hubbub serve --cluster` processes: messages across
//! nodes, key rotation enforced everywhere within a second, concurrent regenerations converging,
//! reliable sessions handed over to the node their client recovers on, a killed node, NATS lost
//! and back, NATS unreachable at start.
//!
//! Needs `nats-server` (Debian package `nats-server`; `scripts/test` installs it).

mod common;

use base64::Engine;
use common::{wait_timeout, Hubbub, BIN};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// The tests measure latencies and run several processes each: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn nats_binary() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
        .expect(
            "nats-server is not installed: `apt-get install nats-server` (scripts/test does it)",
        )
}

/// A `nats-server -js` process.
struct Nats {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
}

impl Nats {
    fn start() -> Self {
        let mut nats = Self {
            child: None,
            port: free_port(),
            store: tempfile::tempdir().expect("temp dir"),
        };
        nats.restart();
        nats
    }

    /// (Re)starts the server on the same port and store.
    fn restart(&mut self) {
        let child = Command::new(nats_binary())
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.store.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server and deletes its store: JetStream forgets every bucket and stream.
    fn lose_store(&mut self) {
        self.stop();
        for entry in std::fs::read_dir(self.store.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                std::fs::remove_dir_all(path).unwrap();
            } else {
                std::fs::remove_file(path).unwrap();
            }
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One node: its process and its own data directory.
struct Node {
    hubbub: Option<Hubbub>,
    _dir: tempfile::TempDir,
    id: String,
    http: reqwest::Client,
}

impl Node {
    fn start(nats: &Nats, id: &str) -> Self {
        Self::start_with(nats, id, "")
    }

    /// Starts a node with a config file holding `toml`.
    fn start_with(nats: &Nats, id: &str, toml: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("hubbub.toml");
        std::fs::write(&config, toml).unwrap();
        let hubbub = Hubbub::start_with(
            &dir.path().join("data"),
            &[
                "--cluster",
                &nats.url(),
                "--node-id",
                id,
                "--config",
                config.to_str().unwrap(),
            ],
            &[],
        )
        .unwrap_or_else(|stderr| panic!("node {id} did not start: {stderr}"));
        assert!(
            hubbub
                .banner
                .iter()
                .any(|l| l.starts_with(&format!("cluster node: {id} "))),
            "{:?}",
            hubbub.banner
        );
        Self {
            hubbub: Some(hubbub),
            _dir: dir,
            id: id.into(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        }
    }

    fn running(&self) -> &Hubbub {
        self.hubbub.as_ref().expect("running")
    }

    fn port(&self) -> String {
        self.running()
            .public_addr
            .rsplit(':')
            .next()
            .unwrap()
            .to_string()
    }

    fn admin_token(&self) -> String {
        std::fs::read_to_string(self.running().data_dir.join("admin-token"))
            .expect("admin token file")
            .trim()
            .to_string()
    }

    async fn keys(&self) -> Value {
        let response = self
            .http
            .get(format!("{}/admin/keys", self.running().admin_url()))
            .bearer_auth(self.admin_token())
            .send()
            .await
            .expect("admin request");
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    async fn primary(&self) -> (String, u64) {
        let keys = self.keys().await;
        (
            keys["primaryKey"].as_str().unwrap().to_string(),
            keys["primary"]["version"].as_u64().unwrap(),
        )
    }

    /// `POST /admin/keys/regenerate`: the status and the body.
    async fn regenerate(&self, key_type: &str) -> (u16, Value) {
        let response = self
            .http
            .post(format!(
                "{}/admin/keys/regenerate",
                self.running().admin_url()
            ))
            .bearer_auth(self.admin_token())
            .json(&json!({ "keyType": key_type }))
            .send()
            .await
            .expect("admin request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A REST request signed with `key` as the SDKs sign it; returns the status.
    async fn rest(&self, key: &str, path_and_query: &str, body: &str) -> u16 {
        let path = path_and_query.split('?').next().unwrap();
        let aud = format!("http://localhost:{}{path}", self.port());
        let token = sign(json!({ "aud": aud, "exp": now() + 600 }), key);
        let response = self
            .http
            .post(format!(
                "http://{}{path_and_query}",
                self.running().public_addr
            ))
            .bearer_auth(token)
            .header("content-type", "text/plain")
            .body(body.to_string())
            .send()
            .await
            .expect("REST request");
        response.status().as_u16()
    }

    /// Any REST call signed with `key`: the status and the body.
    async fn call(
        &self,
        key: &str,
        method: reqwest::Method,
        path_and_query: &str,
        json_body: Option<Value>,
    ) -> (u16, String) {
        let path = path_and_query.split('?').next().unwrap();
        let aud = format!("http://localhost:{}{path}", self.port());
        let token = sign(json!({ "aud": aud, "exp": now() + 600 }), key);
        let mut request = self
            .http
            .request(
                method,
                format!("http://{}{path_and_query}", self.running().public_addr),
            )
            .bearer_auth(token);
        if let Some(body) = json_body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("REST request");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// A REST call on hub `chat`: `path` after `/api/hubs/chat/`, with or without a query.
    async fn chat(&self, key: &str, method: reqwest::Method, path: &str) -> u16 {
        let sep = if path.contains('?') { '&' } else { '?' };
        let path = format!("/api/hubs/chat/{path}{sep}api-version=2024-12-01");
        self.call(key, method, &path, None).await.0
    }

    async fn broadcast(&self, key: &str, body: &str) -> u16 {
        self.rest(key, "/api/hubs/chat/:send?api-version=2024-12-01", body)
            .await
    }

    /// A `json.reliable.webpubsub.azure.v1` client of `user` in `groups`; returns it, its
    /// connection id and its reconnection token.
    async fn reliable_client(
        &self,
        key: &str,
        user: &str,
        groups: &[&str],
    ) -> (Client, String, String) {
        let aud = format!("http://localhost:{}/client/hubs/chat", self.port());
        let token = sign(
            json!({"aud": aud, "exp": now() + 600, "sub": user, "webpubsub.group": groups}),
            key,
        );
        let url = format!(
            "ws://{}/client/hubs/chat?access_token={token}",
            self.running().public_addr
        );
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert(
            "sec-websocket-protocol",
            "json.reliable.webpubsub.azure.v1".parse().unwrap(),
        );
        let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let mut client = Client { ws };
        let connected = client.next_json().await.unwrap();
        assert_eq!(connected["event"], "connected", "{connected}");
        (
            client,
            connected["connectionId"].as_str().unwrap().to_string(),
            connected["reconnectionToken"].as_str().unwrap().to_string(),
        )
    }

    /// A reliable client's recovery reconnect to this node (the upgrade itself always succeeds).
    async fn recover(&self, id: &str, reconnection_token: &str) -> Client {
        let url = format!(
            "ws://{}/client/hubs/chat?awps_connection_id={id}&awps_reconnection_token={}",
            self.running().public_addr,
            reconnection_token
                .replace('+', "%2B")
                .replace('/', "%2F")
                .replace('=', "%3D")
        );
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert(
            "sec-websocket-protocol",
            "json.reliable.webpubsub.azure.v1".parse().unwrap(),
        );
        let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        Client { ws }
    }

    /// A `json.webpubsub.azure.v1` client of `user` in `groups`; returns it and its connection id.
    async fn client(&self, key: &str, user: &str, groups: &[&str]) -> (Client, String) {
        let aud = format!("http://localhost:{}/client/hubs/chat", self.port());
        let token = sign(
            json!({
                "aud": aud,
                "exp": now() + 600,
                "sub": user,
                "webpubsub.group": groups,
                "role": ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"],
            }),
            key,
        );
        let url = format!(
            "ws://{}/client/hubs/chat?access_token={token}",
            self.running().public_addr
        );
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert(
            "sec-websocket-protocol",
            "json.webpubsub.azure.v1".parse().unwrap(),
        );
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("client connects");
        let mut client = Client { ws };
        let connected = client.next_json().await.expect("connected message");
        assert_eq!(connected["event"], "connected", "{connected}");
        let id = connected["connectionId"].as_str().unwrap().to_string();
        (client, id)
    }
}

struct Client {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Client {
    /// The next JSON frame within 5 s (None when the socket ended or nothing came).
    async fn next_json(&mut self) -> Option<Value> {
        self.next_json_within(Duration::from_secs(5)).await
    }

    async fn next_json_within(&mut self, limit: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match frame {
                Ok(Message::Text(text)) => return serde_json::from_str(text.as_str()).ok(),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// True when the service closes the socket within 5 s (after any system message).
    async fn closed(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// The data and sequence id of the next `message` (reliable protocol), skipping the rest.
    async fn next_sequenced(&mut self) -> Option<(String, u64)> {
        loop {
            let frame = self.next_json().await?;
            if frame["type"] == "message" {
                return Some((
                    frame["data"].as_str().unwrap_or_default().to_string(),
                    frame["sequenceId"].as_u64().expect("a sequence id"),
                ));
            }
        }
    }

    /// The data of the next `message`, skipping acks.
    async fn next_data(&mut self) -> Option<String> {
        loop {
            let frame = self.next_json().await?;
            if frame["type"] == "message" {
                return Some(frame["data"].as_str().unwrap_or_default().to_string());
            }
        }
    }

    async fn send_json(&mut self, value: Value) {
        self.ws
            .send(Message::Text(value.to_string().into()))
            .await
            .expect("client sends");
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(claims: Value, key: &str) -> String {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let input = format!(
        "{}.{}",
        b64(br#"{"alg":"HS256","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    );
    let signature = b64(&hubbub_proto::jwt::hmac_sha256(
        key.as_bytes(),
        input.as_bytes(),
    ));
    format!("{input}.{signature}")
}

fn cluster(nats: &Nats) -> [Node; 3] {
    ["a", "b", "c"].map(|id| Node::start(nats, id))
}

/// Waits until every node shows the same primary key; returns it.
async fn converged(nodes: &[&Node]) -> (String, u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut seen = Vec::new();
        for node in nodes {
            seen.push(node.primary().await);
        }
        if seen.windows(2).all(|w| w[0] == w[1]) {
            return seen.remove(0);
        }
        assert!(Instant::now() < deadline, "nodes disagree: {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn unreachable_nats_at_start_is_one_clear_error_and_a_failed_exit() {
    let _serial = SERIAL.blocking_lock();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "--cluster",
            &format!("nats://someone:pa55word@127.0.0.1:{port}"),
        ])
        .env("HUBBUB_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = wait_timeout(&mut child, Duration::from_secs(20)).expect("hubbub exits");
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!status.success(), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(
        stderr.contains(&format!("cannot reach NATS at nats://127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(
        !stderr.contains("pa55word") && !stderr.contains("someone"),
        "{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("Hubbub is ready."),
        "it must not serve"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reach_clients_on_every_node() {
    let _serial = SERIAL.lock().await;
    let nats = Nats::start();
    let [a, b, c] = cluster(&nats);
    let (key, _) = converged(&[&a, &b, &c]).await;
    let group = "room.1 >*";
    let (mut on_b, id_b) = b.client(&key, "u1", &[group]).await;
    let (mut on_c, _) = c.client(&key, "u2", &[group]).await;
    let (mut other_c, _) = c.client(&key, "u3", &[]).await;
    assert!(
        id_b.starts_with("b-"),
        "the connection id names its node: {id_b}"
    );

    // A broadcast through A (which has no clients) reaches B and C, once each.
    assert_eq!(a.broadcast(&key, "to all").await, 202);
    for client in [&mut on_b, &mut on_c, &mut other_c] {
        assert_eq!(client.next_data().await.as_deref(), Some("to all"));
    }

    // A group send through A reaches the members on B and C only.
    let path = format!(
        "/api/hubs/chat/groups/{}/:send?api-version=2024-12-01",
        "room.1%20%3E*"
    );
    assert_eq!(a.rest(&key, &path, "to group").await, 202);
    assert_eq!(on_b.next_data().await.as_deref(), Some("to group"));
    assert_eq!(on_c.next_data().await.as_deref(), Some("to group"));

    // A user send through A reaches that user's connection on C only.
    let path = "/api/hubs/chat/users/u3/:send?api-version=2024-12-01";
    assert_eq!(a.rest(&key, path, "to u3").await, 202);
    assert_eq!(other_c.next_data().await.as_deref(), Some("to u3"));

    // A send to one connection through C goes straight to its node, B.
    let path = format!("/api/hubs/chat/connections/{id_b}/:send?api-version=2024-12-01");
    assert_eq!(c.rest(&key, &path, "to one").await, 202);
    assert_eq!(on_b.next_data().await.as_deref(), Some("to one"));

    // `excluded` holds across nodes.
    let path = format!("/api/hubs/chat/:send?api-version=2024-12-01&excluded={id_b}");
    assert_eq!(a.rest(&key, &path, "not to b").await, 202);
    assert_eq!(on_c.next_data().await.as_deref(), Some("not to b"));
    assert_eq!(other_c.next_data().await.as_deref(), Some("not to b"));

    // A client's group message on C reaches the member on B, with its sender.
    on_c.send_json(json!({"type": "sendToGroup", "group": group, "dataType": "text", "data": "from u2", "noEcho": true}))
        .await;
    let frame = loop {
        let frame = on_b.next_json().await.expect("a frame");
        if frame["type"] == "message" {
            break frame;
        }
    };
    assert_eq!(frame["data"], "from u2", "{frame}");
    assert_eq!(frame["fromUserId"], "u2", "{frame}");
    assert_eq!(frame["group"], group, "{frame}");

    // The nodes count what crossed NATS.
    let metrics = a
        .http
        .get(format!("{}/metrics", a.running().admin_url()))
        .bearer_auth(a.admin_token())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("hubbub_cluster_connected{node=\"a\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hubbub_cluster_messages_total{direction=\"published\"} 4"),
        "A forwarded its 4 sends: {metrics}"
    );

    // Nothing else arrived: the marker is the next message everyone gets (no duplicates, and
    // neither the group message nor the user message leaked to non-members; noEcho held).
    assert_eq!(b.broadcast(&key, "marker").await, 202);
    assert_eq!(on_b.next_data().await.as_deref(), Some("marker"));
    assert_eq!(on_c.next_data().await.as_deref(), Some("marker"));
    assert_eq!(other_c.next_data().await.as_deref(), Some("marker"));

    // Joining a group on B is acknowledged once sends through other nodes reach it.
    other_c
        .send_json(json!({"type": "joinGroup", "group": "late", "ackId": 7}))
        .await;
    let ack = other_c.next_json().await.unwrap();
    assert_eq!(
        (ack["type"].as_str(), ack["success"].as_bool()),
        (Some("ack"), Some(true)),
        "{ack}"
    );
    let path = "/api/hubs/chat/groups/late/:send?api-version=2024-12-01";
    assert_eq!(a.rest(&key, path, "late joiner").await, 202);
    assert_eq!(other_c.next_data().await.as_deref(), Some("late joiner"));
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regeneration_on_one_node_is_enforced_on_every_node_within_a_second() {
    let _serial = SERIAL.lock().await;
    let nats = Nats::start();
    let [a, b, c] = cluster(&nats);
    let (mut old, _) = converged(&[&a, &b, &c]).await;
    const ROUNDS: usize = 20;
    let mut refused_everywhere = Vec::new();
    for round in 0..ROUNDS {
        assert_eq!(a.broadcast(&old, "x").await, 202, "round {round}");
        assert_eq!(c.broadcast(&old, "x").await, 202, "round {round}");
        let started = Instant::now();
        let (status, body) = b.regenerate("Primary").await;
        assert_eq!(status, 200, "{body}");
        let new = body["primaryKey"].as_str().unwrap().to_string();
        assert_eq!(b.broadcast(&old, "x").await, 401, "refused at once on B");
        let (mut on_a, mut on_c) = (None, None);
        while on_a.is_none() || on_c.is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "round {round}: old key still accepted after 5 s (A: {on_a:?}, C: {on_c:?})"
            );
            if on_a.is_none() && a.broadcast(&old, "x").await == 401 {
                on_a = Some(started.elapsed());
            }
            if on_c.is_none() && c.broadcast(&old, "x").await == 401 {
                on_c = Some(started.elapsed());
            }
        }
        assert_eq!(a.broadcast(&new, "x").await, 202);
        assert_eq!(c.broadcast(&new, "x").await, 202);
        refused_everywhere.push(on_a.unwrap().max(on_c.unwrap()));
        old = new;
    }
    refused_everywhere.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "rotation propagation over {ROUNDS} regenerations on B, until the old key is refused on A and C (from the start of the admin call): min {:.1} ms, median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        ms(refused_everywhere[0]),
        ms(percentile(&refused_everywhere, 0.5)),
        ms(percentile(&refused_everywhere, 0.9)),
        ms(refused_everywhere[ROUNDS - 1]),
    );
    let worst = refused_everywhere[ROUNDS - 1];
    assert!(worst < Duration::from_secs(1), "the slowest took {worst:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_regenerations_on_two_nodes_all_take_effect_and_converge() {
    let _serial = SERIAL.lock().await;
    let nats = Nats::start();
    let [a, b, c] = cluster(&nats);
    let (_, before) = converged(&[&a, &b, &c]).await;
    const ROUNDS: u64 = 5;
    for _ in 0..ROUNDS {
        let ((sa, ka), (sb, kb)) = tokio::join!(a.regenerate("Primary"), b.regenerate("Primary"));
        assert_eq!((sa, sb), (200, 200), "{ka} {kb}");
        assert_ne!(ka["primaryKey"], kb["primaryKey"]);
    }
    let (key, version) = converged(&[&a, &b, &c]).await;
    assert_eq!(
        version,
        before + 2 * ROUNDS,
        "every regeneration took effect"
    );
    for node in [&a, &b, &c] {
        assert_eq!(node.broadcast(&key, "x").await, 202, "node {}", node.id);
    }
    // Each node's audit log holds every regeneration, copied from the cluster's stream.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let audit: Value = c
            .http
            .get(format!("{}/admin/audit?limit=500", c.running().admin_url()))
            .bearer_auth(c.admin_token())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let regenerated = audit["value"]
            .as_array()
            .map(|events| {
                events
                    .iter()
                    .filter(|e| e["event"] == "regenerated" && e["slot"] == "primary")
                    .count()
            })
            .unwrap_or(0);
        if regenerated as u64 == 2 * ROUNDS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node c's audit log has {regenerated} primary regenerations: {audit}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_leaves_the_others_serving() {
    let _serial = SERIAL.lock().await;
    let nats = Nats::start();
    let [a, b, mut c] = cluster(&nats);
    let (key, _) = converged(&[&a, &b, &c]).await;
    let (mut on_a, _) = a.client(&key, "u1", &[]).await;
    let (mut on_b, _) = b.client(&key, "u2", &[]).await;
    let (mut on_c, _) = c.client(&key, "u3", &[]).await;
    assert_eq!(a.broadcast(&key, "before").await, 202);
    for client in [&mut on_a, &mut on_b, &mut on_c] {
        assert_eq!(client.next_data().await.as_deref(), Some("before"));
    }
    // A reliable client of C, to try recovering on another node once C is gone.
    let (reliable, id, reconnection_token) = {
        let aud = format!("http://localhost:{}/client/hubs/chat", c.port());
        let token = sign(json!({"aud": aud, "exp": now() + 600, "sub": "r"}), &key);
        let url = format!(
            "ws://{}/client/hubs/chat?access_token={token}",
            c.running().public_addr
        );
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert(
            "sec-websocket-protocol",
            "json.reliable.webpubsub.azure.v1".parse().unwrap(),
        );
        let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let mut client = Client { ws };
        let connected = client.next_json().await.unwrap();
        (
            client,
            connected["connectionId"].as_str().unwrap().to_string(),
            connected["reconnectionToken"].as_str().unwrap().to_string(),
        )
    };
    c.hubbub.take().unwrap().kill9();
    assert_eq!(on_c.next_json().await, None, "C's client lost its node");
    drop(reliable);
    // Its recovery lands on A, which asks C for the session and gets no answer: a clean 1008, so
    // the client starts a new connection.
    let url = format!(
        "ws://{}/client/hubs/chat?awps_connection_id={id}&awps_reconnection_token={}",
        a.running().public_addr,
        reconnection_token
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
    );
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "json.reliable.webpubsub.azure.v1".parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let close = close.expect("a close frame with a code");
    assert_eq!(u16::from(close.code), 1008);
    assert_eq!(
        close.reason.as_str(),
        "the session no longer exists",
        "the token was valid (the salt is shared); only the session is missing"
    );
    for round in 0..3 {
        let body = format!("after {round}");
        assert_eq!(a.broadcast(&key, &body).await, 202);
        assert_eq!(on_a.next_data().await, Some(body.clone()));
        assert_eq!(on_b.next_data().await, Some(body));
    }
    let (status, body) = a.regenerate("Secondary").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reliable_session_recovering_on_another_node_is_handed_over() {
    let _serial = SERIAL.lock().await;
    let nats = Nats::start();
    let [a, b, c] = cluster(&nats);
    let (key, _) = converged(&[&a, &b, &c]).await;
    let group_send = "/api/hubs/chat/groups/room/:send?api-version=2024-12-01";
    let (mut client, id, reconnection_token) = a.reliable_client(&key, "r", &["room"]).await;
    assert!(id.starts_with("a-"), "{id}");
    for body in ["m1", "m2", "m3"] {
        assert_eq!(c.rest(&key, group_send, body).await, 202);
    }
    for (i, body) in ["m1", "m2", "m3"].iter().enumerate() {
        assert_eq!(
            client.next_sequenced().await,
            Some((body.to_string(), i as u64 + 1))
        );
    }
    // A permission the app server grants it on A, to be kept across the move.
    let grant = format!(
        "/api/hubs/chat/permissions/joinLeaveGroup/connections/{id}?api-version=2024-12-01&targetName=extra"
    );
    assert_eq!(
        c.call(&key, reqwest::Method::PUT, &grant, None).await.0,
        200
    );
    // The client has m1 and m2 for sure; m3 it received but did not acknowledge.
    client
        .send_json(json!({"type": "sequenceAck", "sequenceId": 2}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The TCP connection goes without a close frame.
    drop(client);
    for body in ["m4", "m5"] {
        assert_eq!(c.rest(&key, group_send, body).await, 202);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The recovery lands on B: A hands the session over.
    let mut client = b.recover(&id, &reconnection_token).await;
    let connected = client.next_json().await.expect("connected");
    assert_eq!(connected["event"], "connected", "{connected}");
    assert_eq!(
        connected["connectionId"],
        id.as_str(),
        "the same connection"
    );
    for (body, seq) in [("m3", 3), ("m4", 4), ("m5", 5)] {
        assert_eq!(
            client.next_sequenced().await,
            Some((body.to_string(), seq)),
            "the un-acknowledged and missed messages, in order"
        );
    }
    // Its group now reaches it on B, from any node.
    assert_eq!(a.rest(&key, group_send, "m6").await, 202);
    assert_eq!(client.next_sequenced().await, Some(("m6".into(), 6)));
    assert_eq!(c.rest(&key, group_send, "m7").await, 202);
    assert_eq!(client.next_sequenced().await, Some(("m7".into(), 7)));
    // Sends to its connection id reach it once, whichever node takes them (C's go to A, the
    // node named in the id, which passes them on to B).
    let direct = format!("/api/hubs/chat/connections/{id}/:send?api-version=2024-12-01");
    assert_eq!(c.rest(&key, &direct, "via c").await, 202);
    assert_eq!(client.next_sequenced().await, Some(("via c".into(), 8)));
    assert_eq!(b.rest(&key, &direct, "via b").await, 202);
    assert_eq!(a.rest(&key, &direct, "via a").await, 202);
    assert_eq!(client.next_sequenced().await, Some(("via b".into(), 9)));
    assert_eq!(client.next_sequenced().await, Some(("via a".into(), 10)));
    // Questions about it are answered wherever they are asked.
    for node in [&a, &b, &c] {
        let path = format!("connections/{id}");
        assert_eq!(node.chat(&key, reqwest::Method::HEAD, &path).await, 200);
    }
    assert_eq!(
        c.chat(&key, reqwest::Method::HEAD, "groups/room").await,
        200
    );
    assert_eq!(
        a.call(&key, reqwest::Method::HEAD, &grant, None).await.0,
        200
    );
    // Its permissions came along: the granted group may be joined, another may not.
    for (group, ack_id, success) in [("extra", 1, true), ("other", 2, false)] {
        client
            .send_json(json!({"type": "joinGroup", "group": group, "ackId": ack_id}))
            .await;
        let ack = client.next_json().await.expect("an ack");
        assert_eq!(
            (ack["ackId"].as_u64(), ack["success"].as_bool()),
            (Some(ack_id), Some(success)),
            "{ack}"
        );
    }

    // Its recovery lands on C while its socket on B is still open (a half-open connection, say):
    // B, where A sent it, hands it over in turn, and its old socket just ends.
    client
        .send_json(json!({"type": "sequenceAck", "sequenceId": 10}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut old = client;
    assert_eq!(a.rest(&key, group_send, "m11").await, 202);
    assert_eq!(old.next_sequenced().await, Some(("m11".into(), 11)));
    let mut client = c.recover(&id, &reconnection_token).await;
    let connected = client.next_json().await.expect("connected");
    assert_eq!(connected["connectionId"], id.as_str(), "{connected}");
    assert_eq!(
        client.next_sequenced().await,
        Some(("m11".into(), 11)),
        "not acknowledged, so sent again"
    );
    match tokio::time::timeout(Duration::from_secs(5), old.ws.next()).await {
        Ok(None | Some(Err(_))) => {}
        other => {
            panic!("the superseded socket should just end (no disconnected message): {other:?}")
        }
    }
    assert_eq!(b.rest(&key, &direct, "after the second move").await, 202);
    assert_eq!(
        client.next_sequenced().await,
        Some(("after the second move".into(), 12))
    );

    // A session the client closed is gone: recovering it is a clean 1008.
    client.ws.close(None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = b.recover(&id, &reconnection_token).await;
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(5), again.ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(u16::from(close.expect("a close code").code), 1008);
    assert_eq!(
        a.chat(&key, reqwest::Method::HEAD, &format!("connections/{id}"))
            .await,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_too_large_for_one_nats_message_stays_on_its_node() {
    let _serial = SERIAL.lock().await;
    let nats = Nats::start();
    let [a, b, _c] = cluster(&nats);
    let (key, _) = converged(&[&a, &b]).await;
    let group_send = "/api/hubs/chat/groups/room/:send?api-version=2024-12-01";
    let (client, id, reconnection_token) = a.reliable_client(&key, "big", &["room"]).await;
    drop(client);
    // About 1.3 MB not acknowledged: more than NATS's default max_payload (1 MB).
    let big = "x".repeat(64 * 1024);
    for i in 0..20 {
        let body = format!("{i:02}{big}");
        assert_eq!(a.rest(&key, group_send, &body).await, 202);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut elsewhere = b.recover(&id, &reconnection_token).await;
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(5), elsewhere.ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(u16::from(close.expect("a close code").code), 1008);
    // The session stayed on A, whole: recovering there gets every message.
    let mut client = a.recover(&id, &reconnection_token).await;
    let connected = client.next_json().await.expect("connected");
    assert_eq!(connected["connectionId"], id.as_str(), "{connected}");
    for i in 0..20u64 {
        let (data, seq) = client.next_sequenced().await.expect("a message");
        assert_eq!((&data[..2], seq), (format!("{i:02}").as_str(), i + 1));
    }
    assert_eq!(a.rest(&key, group_send, "after").await, 202);
    assert_eq!(client.next_sequenced().await, Some(("after".into(), 21)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_serve_on_without_nats_refuse_key_changes_and_resume_with_no_key_lost() {
    let _serial = SERIAL.lock().await;
    let mut nats = Nats::start();
    let [a, b, c] = cluster(&nats);
    let (key, version) = converged(&[&a, &b, &c]).await;
    let (mut on_b, _) = b.client(&key, "u1", &[]).await;

    nats.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Local clients are still served with the last known keys.
    assert_eq!(b.broadcast(&key, "local").await, 202);
    assert_eq!(on_b.next_data().await.as_deref(), Some("local"));
    // A key change is refused, clearly.
    let (status, body) = a.regenerate("Primary").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "ServiceUnavailable", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("NATS is unreachable"),
        "{body}"
    );
    assert_eq!(a.primary().await, (key.clone(), version), "nothing changed");

    nats.restart();
    // No key was lost: every node still has the key of before, and changes work again.
    assert_eq!(converged(&[&a, &b, &c]).await, (key.clone(), version));
    let deadline = Instant::now() + Duration::from_secs(30);
    let new = loop {
        let (status, body) = a.regenerate("Primary").await;
        if status == 200 {
            break body["primaryKey"].as_str().unwrap().to_string();
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            Instant::now() < deadline,
            "NATS is back but changes are refused"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(converged(&[&a, &b, &c]).await, (new.clone(), version + 1));
    // Messages cross nodes again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert_eq!(c.broadcast(&new, "back").await, 202);
        if let Some(data) = on_b.next_json_within(Duration::from_millis(500)).await {
            assert_eq!(data["data"], "back", "{data}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "messages do not cross nodes after NATS came back"
        );
    }
}

/// The primary regenerations in a node's audit log.
async fn primary_regenerations(node: &Node) -> usize {
    let audit: Value = node
        .http
        .get(format!(
            "{}/admin/audit?limit=500",
            node.running().admin_url()
        ))
        .bearer_auth(node.admin_token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    audit["value"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["event"] == "regenerated" && e["slot"] == "primary")
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_that_lost_its_store_is_seeded_again_from_the_nodes_with_no_key_lost() {
    let _serial = SERIAL.lock().await;
    let mut nats = Nats::start();
    let [a, b, c] = cluster(&nats);
    let (status, body) = a.regenerate("Primary").await;
    assert_eq!(status, 200, "{body}");
    let (key, version) = converged(&[&a, &b, &c]).await;
    assert_eq!(version, 2);

    nats.lose_store();
    nats.restart();
    // The nodes create the bucket again and seed it with the keys they have.
    let deadline = Instant::now() + Duration::from_secs(30);
    let new = loop {
        let (status, body) = b.regenerate("Primary").await;
        if status == 200 {
            break body["primaryKey"].as_str().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no key change after NATS came back: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_ne!(new, key);
    assert_eq!(
        converged(&[&a, &b, &c]).await,
        (new.clone(), version + 1),
        "the change applied on top of the keys of before"
    );
    // Audit events still reach every node's log (the new stream is copied from its start).
    let deadline = Instant::now() + Duration::from_secs(10);
    while primary_regenerations(&c).await < 2 {
        assert!(
            Instant::now() < deadline,
            "the regeneration after the loss is not in c's audit log"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn questions_and_membership_changes_are_answered_across_nodes() {
    use reqwest::Method;
    let _serial = SERIAL.lock().await;
    let nats = Nats::start();
    let [a, b, c] = cluster(&nats);
    let (key, _) = converged(&[&a, &b, &c]).await;
    let (mut u1, id1) = b.client(&key, "u1", &[]).await;
    let (mut u2, id2) = c.client(&key, "u2", &["g"]).await;
    let api = "api-version=2024-12-01";
    let started = Instant::now();
    // Existence, asked on A, which has no connection at all.
    assert_eq!(
        a.chat(&key, Method::HEAD, &format!("connections/{id1}"))
            .await,
        200
    );
    assert_eq!(
        a.chat(&key, Method::HEAD, &format!("connections/{id2}"))
            .await,
        200
    );
    assert_eq!(
        a.chat(&key, Method::HEAD, "connections/b-0123456789abcdef")
            .await,
        404
    );
    assert_eq!(
        a.chat(&key, Method::HEAD, "connections/z-0123456789abcdef")
            .await,
        404,
        "no such node"
    );
    assert_eq!(a.chat(&key, Method::HEAD, "users/u1").await, 200);
    assert_eq!(a.chat(&key, Method::HEAD, "users/nobody").await, 404);
    assert_eq!(a.chat(&key, Method::HEAD, "groups/g").await, 200);
    assert_eq!(a.chat(&key, Method::HEAD, "groups/empty").await, 404);
    assert_eq!(
        b.chat(&key, Method::HEAD, "groups/g").await,
        200,
        "asked on a node without members"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "9 questions took {:?}",
        started.elapsed()
    );

    // Membership changed through A for connections and users of B and C.
    assert_eq!(
        a.chat(&key, Method::PUT, &format!("groups/g/connections/{id1}"))
            .await,
        200
    );
    assert_eq!(
        a.chat(&key, Method::PUT, "groups/g/connections/b-0123456789abcdef")
            .await,
        404
    );
    assert_eq!(a.chat(&key, Method::PUT, "users/u2/groups/g3").await, 200);
    assert_eq!(
        c.rest(
            &key,
            &format!("/api/hubs/chat/groups/g/:send?{api}"),
            "to g"
        )
        .await,
        202
    );
    assert_eq!(u1.next_data().await.as_deref(), Some("to g"));
    assert_eq!(u2.next_data().await.as_deref(), Some("to g"));
    assert_eq!(
        b.rest(
            &key,
            &format!("/api/hubs/chat/groups/g3/:send?{api}"),
            "to g3"
        )
        .await,
        202
    );
    assert_eq!(u2.next_data().await.as_deref(), Some("to g3"));

    // The group's connections, listed through A, paged across nodes in id order.
    let mut expected = [id1.clone(), id2.clone()];
    expected.sort();
    let (status, body) = a
        .call(
            &key,
            Method::GET,
            &format!("/api/hubs/chat/groups/g/connections?{api}&maxpagesize=1"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        page["value"][0]["connectionId"],
        expected[0].as_str(),
        "{page}"
    );
    let user_of = |id: &str| if id == id1 { "u1" } else { "u2" };
    assert_eq!(page["value"][0]["userId"], user_of(&expected[0]), "{page}");
    let next = page["nextLink"].as_str().expect("a next page").to_string();
    let (status, body) = a.call(&key, Method::GET, &next, None).await;
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        page["value"][0]["connectionId"],
        expected[1].as_str(),
        "{page}"
    );
    assert!(page["nextLink"].is_null(), "{page}");
    // Permissions of a connection on B, through A.
    let perm = format!("permissions/sendToGroup/connections/{id1}");
    let (status, _) = a
        .call(
            &key,
            Method::PUT,
            &format!("/api/hubs/chat/{perm}?{api}&targetName=g"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let check = format!("/api/hubs/chat/{perm}?{api}&targetName=g");
    assert_eq!(a.call(&key, Method::HEAD, &check, None).await.0, 200);
    assert_eq!(a.call(&key, Method::DELETE, &check, None).await.0, 204);
    assert_eq!(a.call(&key, Method::HEAD, &check, None).await.0, 404);

    // Leaving and closing, through A.
    let (status, _) = a
        .call(
            &key,
            Method::DELETE,
            &format!("/api/hubs/chat/users/u2/groups/g3?{api}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(a.chat(&key, Method::HEAD, "groups/g3").await, 404);
    let (status, _) = a
        .call(
            &key,
            Method::POST,
            &format!("/api/hubs/chat/users/u2/:closeConnections?{api}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert!(u2.closed().await, "u2's connection on C was closed");
    assert_eq!(a.chat(&key, Method::HEAD, "users/u2").await, 404);
    let (status, _) = c
        .call(
            &key,
            Method::DELETE,
            &format!("/api/hubs/chat/connections/{id1}?{api}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert!(u1.closed().await, "u1's connection on B was closed");
    assert_eq!(
        c.chat(&key, Method::HEAD, &format!("connections/{id1}"))
            .await,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_settings_changed_on_one_node_apply_on_every_node() {
    let _serial = SERIAL.lock().await;
    let nats = Nats::start();
    let [a, b, c] = cluster(&nats);
    let admin = |node: &Node, method: reqwest::Method, body: Option<Value>| {
        let mut request = node
            .http
            .request(
                method,
                format!("{}/admin/hubs/chat", node.running().admin_url()),
            )
            .bearer_auth(node.admin_token());
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send()
    };
    let settings = json!({
        "anonymousConnectPolicy": "allow",
        "eventHandlers": [{"urlTemplate": "http://127.0.0.1:9/{event}", "userEventPattern": "*", "systemEvents": []}]
    });
    let response = admin(&a, reqwest::Method::PUT, Some(settings))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    for node in [&b, &c] {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let response = admin(node, reqwest::Method::GET, None).await.unwrap();
            if response.status() == 200 {
                let view: Value = response.json().await.unwrap();
                assert_eq!(
                    view["properties"]["anonymousConnectPolicy"], "allow",
                    "{view}"
                );
                assert_eq!(
                    view["properties"]["eventHandlers"][0]["urlTemplate"],
                    "http://127.0.0.1:9/{event}"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {} lacks the settings",
                node.id
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let response = admin(&b, reqwest::Method::DELETE, None).await.unwrap();
    assert_eq!(response.status(), 204);
    for node in [&a, &c] {
        let deadline = Instant::now() + Duration::from_secs(1);
        while admin(node, reqwest::Method::GET, None)
            .await
            .unwrap()
            .status()
            != 404
        {
            assert!(
                Instant::now() < deadline,
                "node {} kept the settings",
                node.id
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // A node joining later takes the cluster's settings.
    let response = admin(
        &c,
        reqwest::Method::PUT,
        Some(json!({"anonymousConnectPolicy": "allow"})),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let d = Node::start(&nats, "d");
    let response = admin(&d, reqwest::Method::GET, None).await.unwrap();
    assert_eq!(
        response.status(),
        200,
        "the new node has the hub's settings at start"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_usage_is_added_up_across_nodes() {
    let _serial = SERIAL.lock().await;
    let nats = Nats::start();
    let fast = "maintenance_interval_ms = 100\n";
    let [a, b, c] = ["a", "b", "c"].map(|id| Node::start_with(&nats, id, fast));
    let (key, _) = converged(&[&a, &b, &c]).await;
    for _ in 0..3 {
        assert_eq!(a.broadcast(&key, "x").await, 202);
    }
    for _ in 0..2 {
        assert_eq!(b.broadcast(&key, "x").await, 202);
    }
    let (_client, _) = c.client(&key, "u", &[]).await;
    for node in [&a, &b, &c] {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let usage: Value = node
                .http
                .get(format!("{}/admin/keys/usage", node.running().admin_url()))
                .bearer_auth(node.admin_token())
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let primary = &usage["primary"];
            if primary["restRequests"] == 5 && primary["clientConnections"] == 1 {
                assert_eq!(primary["restRequestsLastHour"], 5, "{usage}");
                break;
            }
            assert!(Instant::now() < deadline, "node {} shows {usage}", node.id);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Three `nats-server -js` processes forming one NATS cluster (JetStream replicated).
struct NatsCluster {
    servers: Vec<(Child, u16, u16)>,
    _store: tempfile::TempDir,
}

impl NatsCluster {
    fn start() -> Self {
        let store = tempfile::tempdir().expect("temp dir");
        let ports: Vec<(u16, u16, u16)> = (0..3)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let routes = ports
            .iter()
            .map(|(_, route, _)| format!("nats://127.0.0.1:{route}"))
            .collect::<Vec<_>>()
            .join(",");
        let servers = ports
            .iter()
            .enumerate()
            .map(|(i, (client, route, monitor))| {
                let child = Command::new(nats_binary())
                    .args(["-js", "-a", "127.0.0.1", "-p", &client.to_string()])
                    .args(["-m", &monitor.to_string(), "-n", &format!("n{i}")])
                    .args(["--cluster_name", "hubbub", "--cluster"])
                    .arg(format!("nats://127.0.0.1:{route}"))
                    .args(["--routes", &routes, "-sd"])
                    .arg(store.path().join(format!("n{i}")))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn nats-server");
                (child, *client, *monitor)
            })
            .collect();
        Self {
            servers,
            _store: store,
        }
    }

    /// Waits until JetStream has elected its meta leader (streams can then be created).
    async fn ready(&self) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut leaders = 0;
            for (_, _, monitor) in &self.servers {
                let jsz = http
                    .get(format!("http://127.0.0.1:{monitor}/jsz"))
                    .send()
                    .await;
                if let Ok(response) = jsz {
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    if body["meta_cluster"]["leader"].is_string() {
                        leaders += 1;
                    }
                }
            }
            if leaders == self.servers.len() {
                return;
            }
            assert!(Instant::now() < deadline, "the NATS cluster did not form");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn urls(&self) -> String {
        self.servers
            .iter()
            .map(|(_, client, _)| format!("nats://127.0.0.1:{client}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn kill(&mut self, index: usize) {
        let (child, _, _) = &mut self.servers[index];
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_three_replicas_the_cluster_survives_the_loss_of_a_nats_server() {
    let _serial = SERIAL.lock().await;
    let mut nats = NatsCluster::start();
    nats.ready().await;
    let urls = nats.urls();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .zip(dirs)
        .map(|(id, dir)| {
            let hubbub = Hubbub::start_with(
                &dir.path().join("data"),
                &[
                    "--cluster",
                    &urls,
                    "--cluster-replicas",
                    "3",
                    "--node-id",
                    id,
                ],
                &[],
            )
            .unwrap_or_else(|stderr| panic!("node {id} did not start: {stderr}"));
            Node {
                hubbub: Some(hubbub),
                _dir: dir,
                id: id.to_string(),
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap(),
            }
        })
        .collect();
    let all: Vec<&Node> = nodes.iter().collect();
    let (status, body) = nodes[0].regenerate("Primary").await;
    assert_eq!(status, 200, "{body}");
    let (key, version) = converged(&all).await;

    // The key bucket and the audit stream have three replicas.
    let monitor = nats.servers[1].2;
    let jsz: Value = reqwest::get(format!(
        "http://127.0.0.1:{monitor}/jsz?accounts=true&streams=true&config=true"
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    for stream in ["KV_hubbub_keys", "hubbub_audit", "KV_hubbub_hubs"] {
        let replicas = jsz["account_details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten())
            .find(|d| d["name"] == stream)
            .map(|d| d["config"]["num_replicas"].clone());
        assert_eq!(replicas, Some(json!(3)), "{stream}: {jsz}");
    }

    // One NATS server of three goes away: the replicated bucket keeps every key and takes
    // changes; nodes connected to it move to another server.
    nats.kill(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let new = loop {
        let (status, body) = nodes[1].regenerate("Primary").await;
        if status == 200 {
            break body["primaryKey"].as_str().unwrap().to_string();
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            Instant::now() < deadline,
            "no key change with 2 of 3 NATS servers"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_ne!(new, key);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut seen = Vec::new();
        for node in &all {
            seen.push(node.primary().await);
        }
        if seen.iter().all(|k| *k == (new.clone(), version + 1)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nodes did not converge: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for node in &all {
        assert_eq!(node.broadcast(&new, "x").await, 202, "node {}", node.id);
        assert_eq!(node.broadcast(&key, "x").await, 401, "node {}", node.id);
    }
}

/// A tiny webhook receiver: records each request body and answers 200.
async fn webhook_receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/hubbub", listener.local_addr().unwrap());
    let bodies: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let record = std::sync::Arc::clone(&bodies);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let record = std::sync::Arc::clone(&record);
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = socket.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (name, value) = l.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if request.len() >= end + 4 + length {
                        let body = String::from_utf8_lossy(&request[end + 4..end + 4 + length]);
                        record.lock().unwrap().push(body.to_string());
                        let _ = socket
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                            .await;
                        return;
                    }
                }
            });
        }
    });
    (url, bodies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_notice_is_sent_once_by_one_node_not_once_per_node() {
    let _serial = SERIAL.lock().await;
    let nats = Nats::start();
    let (url, bodies) = webhook_receiver().await;
    let toml = format!(
        "maintenance_interval_ms = 100\n\n[notifications]\nwebhook_url = \"{url}\"\nwebhook_secret = \"a-webhook-secret-of-some-length\"\n"
    );
    let nodes = ["a", "b", "c"].map(|id| Node::start_with(&nats, id, &toml));
    let response = nodes[1]
        .http
        .post(format!(
            "{}/admin/keys/require-rotation",
            nodes[1].running().admin_url()
        ))
        .bearer_auth(nodes[1].admin_token())
        .json(&json!({"keyType": "Secondary", "by": "3d", "reason": "offboarding"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while bodies.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no node sent the notice");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every node's housekeeper runs many more times (every 100 ms) and sees the same due notice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let bodies = bodies.lock().unwrap().clone();
    let required: Vec<&String> = bodies
        .iter()
        .filter(|b| b.contains("\"rotation_required\""))
        .collect();
    assert_eq!(
        required.len(),
        1,
        "sent once, not once per node: {bodies:?}"
    );
    assert!(required[0].contains("\"secondary\""), "{}", required[0]);
}

/// `hubbub_cluster_messages_total{direction="received"}` of a node.
async fn received_from_other_nodes(node: &Node) -> u64 {
    let metrics = node
        .http
        .get(format!("{}/metrics", node.running().admin_url()))
        .bearer_auth(node.admin_token())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("hubbub_cluster_messages_total{direction=\"received\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no received counter: {metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_with_members_on_one_node_does_not_load_the_others() {
    let _serial = SERIAL.lock().await;
    let nats = Nats::start();
    let [a, b, c] = cluster(&nats);
    let (key, _) = converged(&[&a, &b, &c]).await;
    let (mut local, _) = b.client(&key, "u1", &["local"]).await;
    let (mut elsewhere, _) = c.client(&key, "u2", &["elsewhere"]).await;
    let (before_a, before_c) = (
        received_from_other_nodes(&a).await,
        received_from_other_nodes(&c).await,
    );
    let path = "/api/hubs/chat/groups/local/:send?api-version=2024-12-01";
    for i in 0..20 {
        assert_eq!(b.rest(&key, path, &format!("local {i}")).await, 202);
        assert_eq!(
            local.next_data().await.as_deref(),
            Some(format!("local {i}").as_str())
        );
    }
    // Then a message for C's group through the same node: NATS keeps one publisher's order, so
    // had C subscribed to the local group, the 20 would have reached C before this one.
    let path = "/api/hubs/chat/groups/elsewhere/:send?api-version=2024-12-01";
    assert_eq!(b.rest(&key, path, "for c").await, 202);
    assert_eq!(elsewhere.next_data().await.as_deref(), Some("for c"));
    assert_eq!(
        received_from_other_nodes(&c).await - before_c,
        1,
        "C took only the message for its own member"
    );
    assert_eq!(
        received_from_other_nodes(&a).await - before_a,
        0,
        "A, with no members, took nothing"
    );
}

/// A tiny app server for event handlers: answers the abuse-protection OPTIONS with
/// `WebHook-Allowed-Origin: *` and every POST with 200, recording each POST's path and the
/// `ce-connectionState` it carried; it answers `connect` with `{}` and the connection state
/// `moved-along`.
async fn event_handler() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let posts: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let record = std::sync::Arc::clone(&posts);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let record = std::sync::Arc::clone(&record);
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let text = String::from_utf8_lossy(&buffer).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let head = &text[..end];
                        let length = head
                            .lines()
                            .find_map(|l| {
                                let (name, value) = l.split_once(':')?;
                                name.eq_ignore_ascii_case("content-length")
                                    .then(|| value.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if buffer.len() >= end + 4 + length {
                            let request_line = head.lines().next().unwrap_or("").to_string();
                            let mut parts = request_line.split(' ');
                            let (method, path) =
                                (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                            let state = head.lines().find_map(|l| {
                                let (name, value) = l.split_once(':')?;
                                name.eq_ignore_ascii_case("ce-connectionstate")
                                    .then(|| value.trim().to_string())
                            });
                            if method == "POST" {
                                record.lock().unwrap().push(match state {
                                    Some(state) => format!("{path} state={state}"),
                                    None => path.to_string(),
                                });
                            }
                            let answer = if path == "/connect" {
                                "HTTP/1.1 200 OK\r\nce-connectionState: moved-along\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
                            } else {
                                "HTTP/1.1 200 OK\r\nWebHook-Allowed-Origin: *\r\ncontent-length: 0\r\n\r\n"
                            };
                            if socket.write_all(answer.as_bytes()).await.is_err() {
                                return;
                            }
                            buffer.drain(..end + 4 + length);
                            continue;
                        }
                    }
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (base, posts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_moving_between_nodes_keeps_its_state_and_sends_no_extra_connected_or_disconnected(
) {
    let _serial = SERIAL.lock().await;
    let nats = Nats::start();
    let [a, b, c] = cluster(&nats);
    let (key, _) = converged(&[&a, &b, &c]).await;
    let (base, posts) = event_handler().await;
    let settings = json!({"eventHandlers": [{"urlTemplate": format!("{base}/{{event}}"), "userEventPattern": "*", "systemEvents": ["connect", "connected", "disconnected"]}]});
    let response = a
        .http
        .put(format!("{}/admin/hubs/chat", a.running().admin_url()))
        .bearer_auth(a.admin_token())
        .json(&settings)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // The settings reach B before the session moves there.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let view: Value = b
            .http
            .get(format!("{}/admin/hubs/chat", b.running().admin_url()))
            .bearer_auth(b.admin_token())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or_default();
        if view["properties"]["eventHandlers"][0]["urlTemplate"].is_string() {
            break;
        }
        assert!(Instant::now() < deadline, "settings did not reach B");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let count = |event: &str| {
        posts
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.split(' ').next() == Some(event))
            .count()
    };
    let (client, id, reconnection_token) = a.reliable_client(&key, "r", &["room"]).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while count("/connected") == 0 {
        assert!(Instant::now() < deadline, "no connected event");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(client);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut client = b.recover(&id, &reconnection_token).await;
    let connected = client.next_json().await.expect("connected");
    assert_eq!(connected["connectionId"], id.as_str(), "{connected}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        (count("/connected"), count("/disconnected")),
        (1, 0),
        "a move is neither a new connection nor an end: {:?}",
        posts.lock().unwrap()
    );
    // Closed through C, the session ends once, on the node that holds it.
    assert_eq!(
        c.chat(&key, reqwest::Method::DELETE, &format!("connections/{id}"))
            .await,
        204
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while count("/disconnected") == 0 {
        assert!(Instant::now() < deadline, "no disconnected event");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        (
            count("/connect"),
            count("/connected"),
            count("/disconnected")
        ),
        (1, 1, 1),
        "{:?}",
        posts.lock().unwrap()
    );
    // The connection state the app server set at connect (on A) came along to B.
    let posts = posts.lock().unwrap().clone();
    let ended = posts
        .iter()
        .find(|p| p.starts_with("/disconnected"))
        .unwrap();
    assert_eq!(ended, "/disconnected state=moved-along", "{posts:?}");
}
