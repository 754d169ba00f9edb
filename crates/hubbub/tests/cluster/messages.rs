//! Messages across nodes: broadcasts, group, user and connection sends, exclusions and client
//! group messages reach exactly their clients wherever they are, and a group whose members are
//! all on one node costs the other nodes nothing.

use crate::support::{cluster, converged, Nats, Node, SERIAL};
use serde_json::json;

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
    let metrics = a.metrics().await;
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

/// `hubbub_cluster_messages_total{direction="received"}` of a node.
async fn received_from_other_nodes(node: &Node) -> u64 {
    let metrics = node.metrics().await;
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
