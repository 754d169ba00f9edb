//! Failures: NATS unreachable at start, a killed node, NATS stopped and back, NATS back without
//! its store, and one of three replicated NATS servers lost.

use crate::common::{get_json, wait_timeout, BIN};
use crate::support::{
    cluster, converged, free_port, primary_regenerations, secret_file, Nats, NatsCluster, Node,
    CLUSTER_SECRET, SERIAL,
};
use reqwest::Method;
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
        .arg("--cluster-secret-file")
        .arg(secret_file(dir.path(), CLUSTER_SECRET))
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
    let (reliable, id, reconnection_token) = c.reliable_client(&key, "r", &[]).await;
    c.hubbub.take().unwrap().kill9();
    assert_eq!(on_c.next_json().await, None, "C's client lost its node");
    drop(reliable);
    // Its recovery lands on A, which asks C for the session and gets no answer: a clean 1008, so
    // the client starts a new connection.
    let mut recovering = a.recover(&id, &reconnection_token).await;
    let close = recovering.close_frame().await;
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
async fn nodes_serve_on_without_nats_refuse_key_changes_and_resume_with_no_key_lost() {
    let _serial = SERIAL.lock().await;
    let mut nats = Nats::start();
    let [a, b, c] = cluster(&nats);
    let (key, version) = converged(&[&a, &b, &c]).await;
    let (mut on_b, _) = b.client(&key, "u1", &[]).await;
    let health = a.admin(Method::GET, "/admin/health", None).await;
    assert_eq!(health.status(), 200);
    assert_eq!(
        health.json::<serde_json::Value>().await.unwrap()["checks"]["cluster"]["ok"],
        true
    );

    nats.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The readiness probe says what is wrong.
    let health = a.admin(Method::GET, "/admin/health", None).await;
    assert_eq!(health.status(), 503);
    let body = health.json::<serde_json::Value>().await.unwrap();
    assert_eq!(body["status"], "unavailable", "{body}");
    assert_eq!(body["checks"]["cluster"]["ok"], false, "{body}");
    assert_eq!(body["checks"]["database"]["ok"], true, "{body}");
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
    while primary_regenerations(&c.audit().await) < 2 {
        assert!(
            Instant::now() < deadline,
            "the regeneration after the loss is not in c's audit log"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_three_replicas_the_cluster_survives_the_loss_of_a_nats_server() {
    let _serial = SERIAL.lock().await;
    let mut nats = NatsCluster::start();
    nats.ready().await;
    let urls = nats.urls();
    let nodes = ["a", "b", "c"].map(|id| {
        let args = [
            "--cluster",
            &urls,
            "--cluster-replicas",
            "3",
            "--node-id",
            id,
        ];
        Node::launch(tempfile::tempdir().unwrap(), id, &args)
    });
    let all: Vec<&Node> = nodes.iter().collect();
    let (status, body) = nodes[0].regenerate("Primary").await;
    assert_eq!(status, 200, "{body}");
    let (key, version) = converged(&all).await;

    // The key bucket and the audit stream have three replicas.
    let monitor = nats.servers[1].2;
    let url = format!("http://127.0.0.1:{monitor}/jsz?accounts=true&streams=true&config=true");
    let jsz = get_json(&reqwest::Client::new(), &url, None).await;
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
