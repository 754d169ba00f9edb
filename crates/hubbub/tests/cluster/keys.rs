//! Keys across nodes: a regeneration on one node is enforced on every node within a second,
//! concurrent regenerations on two nodes all take effect and converge, and a revocation with
//! disconnect made on one node closes that key's connections on every node.

use crate::support::{cluster, converged, primary_regenerations, Nats, SERIAL};
use std::time::{Duration, Instant};

/// The value at fraction `p` (0 to 1) of a sorted sample.
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
    // The key bucket keeps the current ring only: no old key value survives in its history.
    let bucket = nats.stream("KV_hubbub_keys").await;
    assert_eq!(bucket["config"]["max_msgs_per_subject"], 1, "{bucket}");
    assert_eq!(bucket["state"]["messages"], 1, "{bucket}");
    // A `nats://` URL without TLS settings is warned about at start.
    let stderr = a.stop_for_stderr();
    assert!(stderr.contains("not encrypted"), "{stderr}");
    // Each node's audit log holds every regeneration, copied from the cluster's stream.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let audit = c.audit().await;
        let regenerated = primary_regenerations(&audit);
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
async fn revoke_with_disconnect_on_one_node_closes_that_keys_connections_on_every_node() {
    let _serial = SERIAL.lock().await;
    let nats = Nats::start();
    let [a, b, c] = cluster(&nats);
    let (primary, _) = converged(&[&a, &b, &c]).await;
    let secondary = a.keys().await["secondaryKey"].as_str().unwrap().to_string();
    let (mut primary_on_b, _) = b.client(&primary, "u1", &[]).await;
    let (mut primary_on_c, _) = c.client(&primary, "u2", &[]).await;
    let (mut secondary_on_c, _) = c.client(&secondary, "u3", &[]).await;

    let body = serde_json::json!({"keyType": "Primary", "disconnect": true});
    let response = a
        .admin(reqwest::Method::POST, "/admin/keys/revoke", Some(body))
        .await;
    assert_eq!(response.status(), 200);
    let view: serde_json::Value = response.json().await.unwrap();
    assert_eq!(view["closedConnections"], 0, "A had none of them");

    for client in [&mut primary_on_b, &mut primary_on_c] {
        let frame = client.close_frame().await.expect("a close frame");
        assert!(frame.reason.contains("revoked"), "{frame:?}");
    }
    assert_eq!(a.broadcast(&secondary, "still here").await, 202);
    assert_eq!(
        secondary_on_c.next_data().await.as_deref(),
        Some("still here")
    );
    // Each node audited what it closed; every node's log has both.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let audit = a.audit().await;
        let closed = audit["value"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == "connections_closed")
            .count();
        if closed == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{audit}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_rotation_step_is_taken_once_by_one_of_three_nodes() {
    let _serial = SERIAL.lock().await;
    let nats = Nats::start();
    let fast = "maintenance_interval_ms = 100\n";
    let [a, b, c] = ["a", "b", "c"].map(|id| crate::support::Node::start_with(&nats, id, fast));
    converged(&[&a, &b, &c]).await;
    let body = serde_json::json!({"every": "10s"});
    let response = b
        .admin(reqwest::Method::PUT, "/admin/keys/policy", Some(body))
        .await;
    assert_eq!(response.status(), 200);
    let secondary_before = a.keys().await["secondaryKey"].clone();
    // Every node sees the policy; the step is due in 10 s and all three housekeepers race for it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut active = Vec::new();
        for node in [&a, &b, &c] {
            active.push(node.admin_json("/admin/keys/policy").await["activeKeyType"].clone());
        }
        if active.iter().all(|x| x == "secondary") {
            break;
        }
        assert!(Instant::now() < deadline, "{active:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let audit = c.audit().await;
    let steps: Vec<_> = audit["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "rotation_step")
        .collect();
    assert_eq!(steps.len(), 1, "one step for one due time: {steps:?}");
    assert_eq!(steps[0]["actor"], "policy");
    assert_ne!(a.keys().await["secondaryKey"], secondary_before);
    converged(&[&a, &b, &c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_auth_turned_off_on_one_node_is_off_on_every_node_and_survives_a_restart() {
    let _serial = SERIAL.lock().await;
    let nats = Nats::start();
    let [a, b, mut c] = cluster(&nats);
    let (key, _) = converged(&[&a, &b, &c]).await;
    assert_eq!(b.broadcast(&key, "x").await, 202);
    let off = a
        .admin(
            reqwest::Method::PUT,
            "/admin/local-auth",
            Some(serde_json::json!({"disabled": true})),
        )
        .await;
    assert_eq!(off.status(), 200);
    // Refused everywhere within a bounded time, with the reason.
    let deadline = Instant::now() + Duration::from_secs(5);
    for node in [&a, &b, &c] {
        while node.broadcast(&key, "x").await != 401 {
            assert!(
                Instant::now() < deadline,
                "node {} still takes keys",
                node.id
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (status, body) = node
            .call(
                &key,
                reqwest::Method::POST,
                "/api/hubs/chat/:send?api-version=2024-12-01",
                None,
            )
            .await;
        assert_eq!(status, 401);
        assert!(body.contains("local auth is disabled"), "{body}");
    }
    // A node that restarts keeps it (from the cluster and its own store).
    c.restart();
    assert_eq!(c.broadcast(&key, "x").await, 401);
    assert_eq!(
        c.admin_json("/admin/local-auth").await,
        serde_json::json!({"disabled": true})
    );
    let audit = b.audit().await;
    let switched = audit["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "local_auth_disabled")
        .count();
    assert_eq!(switched, 1, "recorded once for the cluster: {audit}");
}
