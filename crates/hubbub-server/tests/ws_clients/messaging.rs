//! Messaging: group messages from clients with acks, duplicates, permissions and no echo; REST
//! sends that reach exactly their targets; simple clients with raw frames.

use crate::common::{next_frame, next_json, send_json, silent_for, TestServer};
use crate::support::{post_text, rest, ALL_ROLES, JSON};
use futures_util::SinkExt;
use hubbub_proto::keys::KeySlot;
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn group_messaging_acks_duplicates_permissions_and_no_echo() {
    let t = TestServer::start().await;
    let key = t.key(KeySlot::Primary);
    let (mut a, _) = t
        .json_client(
            "chat",
            &t.client_token(&key, "chat", Some("alice"), ALL_ROLES, &[]),
            JSON,
        )
        .await;
    let (mut b, _) = t
        .json_client(
            "chat",
            &t.client_token(
                &key,
                "chat",
                Some("bob"),
                &["webpubsub.joinLeaveGroups.room.*"],
                &[],
            ),
            JSON,
        )
        .await;

    send_json(
        &mut a,
        json!({"type": "joinGroup", "group": "room.1", "ackId": 1}),
    )
    .await;
    assert_eq!(
        next_json(&mut a).await,
        json!({"type": "ack", "ackId": 1, "success": true})
    );
    send_json(
        &mut a,
        json!({"type": "joinGroup", "group": "room.1", "ackId": 1}),
    )
    .await;
    let dup = next_json(&mut a).await;
    assert_eq!(dup["error"]["name"], "Duplicate");
    send_json(
        &mut b,
        json!({"type": "joinGroup", "group": "room.1", "ackId": 1}),
    )
    .await;
    assert_eq!(next_json(&mut b).await["success"], true);
    send_json(
        &mut b,
        json!({"type": "joinGroup", "group": "lobby", "ackId": 2}),
    )
    .await;
    let forbidden = next_json(&mut b).await;
    assert_eq!(forbidden["error"]["name"], "Forbidden", "{forbidden}");

    // bob has no send permission.
    send_json(&mut b, json!({"type": "sendToGroup", "group": "room.1", "ackId": 3, "dataType": "text", "data": "x"})).await;
    assert_eq!(next_json(&mut b).await["error"]["name"], "Forbidden");

    // alice sends with echo, then without; text, json and binary.
    send_json(&mut a, json!({"type": "sendToGroup", "group": "room.1", "ackId": 2, "dataType": "json", "data": {"n": 1}})).await;
    assert_eq!(
        next_json(&mut a).await["type"],
        "message",
        "echo comes first: it is queued before the ack"
    );
    assert_eq!(next_json(&mut a).await["success"], true);
    let got = next_json(&mut b).await;
    assert_eq!(
        (
            got["fromUserId"].as_str(),
            got["dataType"].as_str(),
            got["data"]["n"].as_i64()
        ),
        (Some("alice"), Some("json"), Some(1))
    );
    send_json(&mut a, json!({"type": "sendToGroup", "group": "room.1", "ackId": 3, "noEcho": true, "dataType": "binary", "data": "AQID"})).await;
    assert_eq!(
        next_json(&mut a).await["success"],
        true,
        "no echo: only the ack"
    );
    let got = next_json(&mut b).await;
    assert_eq!(
        (got["dataType"].as_str(), got["data"].as_str()),
        (Some("binary"), Some("AQID"))
    );

    // leave, ping, events without an event handler.
    send_json(
        &mut b,
        json!({"type": "leaveGroup", "group": "room.1", "ackId": 4}),
    )
    .await;
    assert_eq!(next_json(&mut b).await["success"], true);
    send_json(&mut b, json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut b).await, json!({"type": "pong"}));
    send_json(
        &mut b,
        json!({"type": "event", "event": "e", "ackId": 5, "dataType": "text", "data": "x"}),
    )
    .await;
    assert_eq!(next_json(&mut b).await["error"]["name"], "InvocationFailed");
    send_json(&mut a, json!({"type": "sendToGroup", "group": "room.1", "dataType": "text", "data": "after leave"})).await;
    assert!(
        silent_for(&mut b, Duration::from_millis(300)).await,
        "bob left the group"
    );
}

#[tokio::test]
async fn rest_sends_reach_exactly_their_targets() {
    let t = TestServer::start().await;
    let key = t.key(KeySlot::Primary);
    let (mut u1a, c1) = t
        .json_client(
            "hub",
            &t.client_token(&key, "hub", Some("u1"), &[], &["g"]),
            JSON,
        )
        .await;
    let (mut u1b, _) = t
        .json_client(
            "hub",
            &t.client_token(&key, "hub", Some("u1"), &[], &[]),
            JSON,
        )
        .await;
    let (mut u2, c2) = t
        .json_client(
            "hub",
            &t.client_token(&key, "hub", Some("u2"), &[], &["g"]),
            JSON,
        )
        .await;
    let id1 = c1["connectionId"].as_str().unwrap().to_string();
    let id2 = c2["connectionId"].as_str().unwrap().to_string();

    assert_eq!(
        post_text(
            &t,
            &format!("/api/hubs/hub/:send?excluded={id1}"),
            "all-but-1"
        )
        .await,
        202
    );
    assert_eq!(next_json(&mut u1b).await["data"], "all-but-1");
    assert_eq!(next_json(&mut u2).await["data"], "all-but-1");
    assert!(silent_for(&mut u1a, Duration::from_millis(200)).await);

    assert_eq!(
        post_text(&t, "/api/hubs/hub/users/u1/:send", "to-u1").await,
        202
    );
    assert_eq!(next_json(&mut u1a).await["data"], "to-u1");
    assert_eq!(next_json(&mut u1b).await["data"], "to-u1");
    assert!(silent_for(&mut u2, Duration::from_millis(200)).await);

    let filter = "filter=userId%20eq%20%27u2%27";
    assert_eq!(
        post_text(
            &t,
            &format!("/api/hubs/hub/groups/g/:send?{filter}"),
            "g-u2"
        )
        .await,
        202
    );
    let got = next_json(&mut u2).await;
    assert_eq!(
        (got["from"].as_str(), got["group"].as_str()),
        (Some("group"), Some("g"))
    );
    assert!(silent_for(&mut u1a, Duration::from_millis(200)).await);

    let json_body = Some(("application/json", br#""Hello""#.to_vec()));
    assert_eq!(
        rest(
            &t,
            reqwest::Method::POST,
            &format!("/api/hubs/hub/connections/{id2}/:send"),
            json_body
        )
        .await,
        202
    );
    let got = next_json(&mut u2).await;
    assert_eq!(
        (
            got["from"].as_str(),
            got["dataType"].as_str(),
            got["data"].as_str()
        ),
        (Some("server"), Some("json"), Some("Hello"))
    );

    assert_eq!(
        post_text(&t, "/api/hubs/hub/:send?filter=userId%20eq", "x").await,
        400
    );
    assert!(
        silent_for(&mut u1b, Duration::from_millis(200)).await,
        "a refused send delivers nothing"
    );
}

#[tokio::test]
async fn simple_clients_get_raw_frames_and_can_publish_to_a_group() {
    let t = TestServer::start().await;
    let key = t.key(KeySlot::Primary);
    let token = t.client_token(&key, "hub", Some("s"), &["webpubsub.sendToGroup.g"], &["g"]);
    let (mut simple, chosen) = t
        .ws_connect(&format!("/client/hubs/hub?access_token={token}"), None)
        .await
        .unwrap();
    assert_eq!(chosen, None, "no subprotocol echoed");
    post_text(&t, "/api/hubs/hub/:send", "plain").await;
    assert!(
        matches!(next_frame(&mut simple).await, Some(Message::Text(t)) if t.as_str() == "plain")
    );
    rest(
        &t,
        reqwest::Method::POST,
        "/api/hubs/hub/:send",
        Some(("application/json", br#""Hello""#.to_vec())),
    )
    .await;
    assert!(
        matches!(next_frame(&mut simple).await, Some(Message::Text(t)) if t.as_str() == r#""Hello""#)
    );
    rest(
        &t,
        reqwest::Method::POST,
        "/api/hubs/hub/:send",
        Some(("application/octet-stream", vec![0, 1, 2])),
    )
    .await;
    assert!(
        matches!(next_frame(&mut simple).await, Some(Message::Binary(b)) if b.as_ref() == [0, 1, 2])
    );

    let (mut listener, _) = t
        .json_client("hub", &t.client_token(&key, "hub", None, &[], &["g"]), JSON)
        .await;
    let publisher_token =
        t.client_token(&key, "hub", Some("pub"), &["webpubsub.sendToGroup.g"], &[]);
    let (mut publisher, _) = t
        .ws_connect(&format!("/client/hubs/hub?access_token={publisher_token}&webpubsub_mode=sendToGroup&group=g"), None)
        .await
        .unwrap();
    publisher
        .send(Message::Text("from simple".into()))
        .await
        .unwrap();
    let got = next_json(&mut listener).await;
    assert_eq!(
        (
            got["group"].as_str(),
            got["fromUserId"].as_str(),
            got["data"].as_str()
        ),
        (Some("g"), Some("pub"), Some("from simple"))
    );

    // The simple client is in g too: it gets the raw text.
    assert!(
        matches!(next_frame(&mut simple).await, Some(Message::Text(t)) if t.as_str() == "from simple")
    );
    // In sendEvent mode, with no event handler, a frame ends the connection.
    simple.send(Message::Text("event?".into())).await.unwrap();
    assert!(matches!(
        next_frame(&mut simple).await,
        Some(Message::Close(_)) | None
    ));
}
