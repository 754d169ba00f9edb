//! Reliable sessions across nodes: a session recovering on another node is handed over with its
//! messages, groups and permissions; one too large for a NATS message stays on its node; a move
//! keeps the connection state and sends no extra connected or disconnected event.

use crate::support::{cluster, converged, Nats, Recorder, Request, SERIAL};
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

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
    assert_eq!(c.call(&key, Method::PUT, &grant, None).await.0, 200);
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
        assert_eq!(node.chat(&key, Method::HEAD, &path).await, 200);
    }
    assert_eq!(c.chat(&key, Method::HEAD, "groups/room").await, 200);
    assert_eq!(a.call(&key, Method::HEAD, &grant, None).await.0, 200);
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
    let close = again.close_frame().await;
    assert_eq!(u16::from(close.expect("a close code").code), 1008);
    assert_eq!(
        a.chat(&key, Method::HEAD, &format!("connections/{id}"))
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
    let close = elsewhere.close_frame().await;
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

/// The app server's answers: `connect` gets `{}` and the connection state `moved-along`; every
/// other request, the abuse-protection OPTIONS included, a 200 that allows any origin.
fn app_server(request: &Request) -> &'static str {
    if request.path == "/connect" {
        "HTTP/1.1 200 OK\r\nce-connectionState: moved-along\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
    } else {
        "HTTP/1.1 200 OK\r\nWebHook-Allowed-Origin: *\r\ncontent-length: 0\r\n\r\n"
    }
}

/// Each POST the app server got: its path and the `ce-connectionState` it carried.
fn posts(app: &Recorder) -> Vec<String> {
    app.requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .map(|r| match r.header("ce-connectionState") {
            Some(state) => format!("{} state={state}", r.path),
            None => r.path,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_moving_between_nodes_keeps_its_state_and_sends_no_extra_connected_or_disconnected(
) {
    let _serial = SERIAL.lock().await;
    let nats = Nats::start();
    let [a, b, c] = cluster(&nats);
    let (key, _) = converged(&[&a, &b, &c]).await;
    let app = Recorder::start(app_server).await;
    let base = &app.url;
    let settings = json!({"eventHandlers": [{"urlTemplate": format!("{base}/{{event}}"), "userEventPattern": "*", "systemEvents": ["connect", "connected", "disconnected"]}]});
    let response = a
        .admin(Method::PUT, "/admin/hubs/chat", Some(settings))
        .await;
    assert_eq!(response.status(), 200);
    // The settings reach B before the session moves there.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let view: Value = b
            .admin(Method::GET, "/admin/hubs/chat", None)
            .await
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
        posts(&app)
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
        posts(&app)
    );
    // Closed through C, the session ends once, on the node that holds it.
    assert_eq!(
        c.chat(&key, Method::DELETE, &format!("connections/{id}"))
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
        posts(&app)
    );
    // The connection state the app server set at connect (on A) came along to B.
    let posts = posts(&app);
    let ended = posts
        .iter()
        .find(|p| p.starts_with("/disconnected"))
        .unwrap();
    assert_eq!(ended, "/disconnected state=moved-along", "{posts:?}");
}
