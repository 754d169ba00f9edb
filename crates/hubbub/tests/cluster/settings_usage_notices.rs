//! Cluster-wide state beyond keys: hub settings changed on one node apply on every node (and on
//! one joining later), key usage is added up across nodes, and a rotation notice is sent once by
//! one node rather than once per node.

use crate::support::{cluster, converged, Nats, Node, Recorder, Request, SERIAL};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A request on hub `chat`'s settings through `node`'s admin API.
async fn hub_settings(node: &Node, method: Method, body: Option<Value>) -> reqwest::Response {
    node.admin(method, "/admin/hubs/chat", body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_settings_changed_on_one_node_apply_on_every_node() {
    let _serial = SERIAL.lock().await;
    let nats = Nats::start();
    let [a, b, c] = cluster(&nats);
    let settings = json!({
        "anonymousConnectPolicy": "allow",
        "eventHandlers": [{"urlTemplate": "http://127.0.0.1:9/{event}", "userEventPattern": "*", "systemEvents": []}]
    });
    let response = hub_settings(&a, Method::PUT, Some(settings)).await;
    assert_eq!(response.status(), 200);
    for node in [&b, &c] {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let response = hub_settings(node, Method::GET, None).await;
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
    let response = hub_settings(&b, Method::DELETE, None).await;
    assert_eq!(response.status(), 204);
    for node in [&a, &c] {
        let deadline = Instant::now() + Duration::from_secs(1);
        while hub_settings(node, Method::GET, None).await.status() != 404 {
            assert!(
                Instant::now() < deadline,
                "node {} kept the settings",
                node.id
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // A node joining later takes the cluster's settings.
    let response = hub_settings(
        &c,
        Method::PUT,
        Some(json!({"anonymousConnectPolicy": "allow"})),
    )
    .await;
    assert_eq!(response.status(), 200);
    let d = Node::start(&nats, "d");
    let response = hub_settings(&d, Method::GET, None).await;
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
            let usage = node.admin_json("/admin/keys/usage").await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_callers_seen_on_any_node_are_listed_on_every_node() {
    let _serial = SERIAL.lock().await;
    let nats = Nats::start();
    let fast = "maintenance_interval_ms = 100\n";
    let [a, b, c] = ["a", "b", "c"].map(|id| Node::start_with(&nats, id, fast));
    let (old, _) = converged(&[&a, &b, &c]).await;
    let (status, body) = a.regenerate("Primary").await;
    assert_eq!(status, 200, "{body}");
    converged(&[&a, &b, &c]).await;
    // The old key, refused on B (twice) and C (once), from the same address and agent.
    for node in [&b, &b, &c] {
        assert_eq!(node.broadcast(&old, "x").await, 401);
    }
    for node in [&a, &b, &c] {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let list = node.admin_json("/admin/keys/stale-callers").await;
            let rows = list["value"].as_array().cloned().unwrap_or_default();
            if rows.len() == 1 && rows[0]["count"] == 3 {
                assert_eq!(rows[0]["keyType"], "primary", "{list}");
                assert_eq!(rows[0]["version"], 1, "{list}");
                break;
            }
            assert!(Instant::now() < deadline, "node {} shows {list}", node.id);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The webhook receiver's answer to every notice.
fn webhook_ok(_: &Request) -> &'static str {
    "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_notice_is_sent_once_by_one_node_not_once_per_node() {
    let _serial = SERIAL.lock().await;
    let nats = Nats::start();
    let receiver = Recorder::start(webhook_ok).await;
    let url = format!("{}/hooks/hubbub", receiver.url);
    let toml = format!(
        "maintenance_interval_ms = 100\n\n[notifications]\nwebhook_url = \"{url}\"\nwebhook_secret = \"a-webhook-secret-of-some-length\"\n"
    );
    let nodes = ["a", "b", "c"].map(|id| Node::start_with(&nats, id, &toml));
    let rotation = json!({"keyType": "Secondary", "by": "3d", "reason": "offboarding"});
    let response = nodes[1]
        .admin(Method::POST, "/admin/keys/require-rotation", Some(rotation))
        .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.requests().is_empty() {
        assert!(Instant::now() < deadline, "no node sent the notice");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every node's housekeeper runs many more times (every 100 ms) and sees the same due notice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let bodies: Vec<String> = receiver.requests().into_iter().map(|r| r.body).collect();
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
