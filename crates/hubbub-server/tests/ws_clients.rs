//! WebSocket clients against a real server: upgrade authentication, subprotocols, group
//! messaging with acks, REST delivery, reliable recovery, key rotation, limits and bad input.

mod common;

use common::{next_frame, next_json, send_json, silent_for, TestServer, Ws};
use futures_util::SinkExt;
use hubbub_proto::keys::KeySlot;
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const JSON: &str = "json.webpubsub.azure.v1";
const RELIABLE: &str = "json.reliable.webpubsub.azure.v1";
const ALL_ROLES: &[&str] = &["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"];

async fn rest(
    t: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<(&str, Vec<u8>)>,
) -> u16 {
    let full = format!(
        "{path}{}api-version=2024-12-01",
        if path.contains('?') { "&" } else { "?" }
    );
    let token = t.rest_token(&t.key(KeySlot::Primary), &full);
    let mut request = t
        .http
        .request(method, t.public_url(&full))
        .bearer_auth(token);
    if let Some((content_type, bytes)) = body {
        request = request.header("content-type", content_type).body(bytes);
    }
    request.send().await.unwrap().status().as_u16()
}

async fn post_text(t: &TestServer, path: &str, text: &str) -> u16 {
    rest(
        t,
        reqwest::Method::POST,
        path,
        Some(("text/plain", text.as_bytes().to_vec())),
    )
    .await
}

#[tokio::test]
async fn upgrades_without_a_valid_token_get_401_never_101() {
    let t = TestServer::start().await;
    let key = t.key(KeySlot::Primary);
    let now = t.now();
    let aud = format!("{}/client/hubs/chat", t.endpoint());
    let cases = [
        ("no token", String::new()),
        (
            "bad signature",
            common::sign(json!({"aud": aud, "exp": now + 60}), "other"),
        ),
        (
            "expired",
            common::sign(json!({"aud": aud, "exp": now - 3600}), &key),
        ),
        ("other hub", t.client_token(&key, "other", None, &[], &[])),
    ];
    for (name, token) in cases {
        let query = if token.is_empty() {
            String::new()
        } else {
            format!("?access_token={token}")
        };
        let result = t
            .ws_connect(&format!("/client/hubs/chat{query}"), Some(RELIABLE))
            .await;
        assert_eq!(result.err(), Some(401), "{name}");
    }
    // The query form and a case-insensitive hub name work.
    let token = t.client_token(&key, "Chat", Some("u"), &[], &[]);
    let (_, chosen) = t
        .ws_connect(
            &format!("/client?hub=chat&access_token={token}"),
            Some(JSON),
        )
        .await
        .unwrap();
    assert_eq!(chosen.as_deref(), Some(JSON));
    // Protobuf only: a clear refusal.
    let refused = t
        .ws_connect(
            &format!("/client/hubs/chat?access_token={token}"),
            Some("protobuf.webpubsub.azure.v1"),
        )
        .await;
    assert_eq!(refused.err(), Some(400));
    // A plain GET with a valid token is not an upgrade.
    let plain = t
        .http
        .get(t.public_url(&format!("/client/hubs/chat?access_token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 400);
}

#[tokio::test]
async fn connected_messages_per_protocol_and_token_groups_are_joined() {
    let t = TestServer::start().await;
    let key = t.key(KeySlot::Secondary);
    let token = t.client_token(&key, "chat", Some("u1"), &[], &["g1"]);
    let (mut reliable, connected) = t.json_client("chat", &token, RELIABLE).await;
    assert_eq!(connected["userId"], "u1");
    assert!(connected["reconnectionToken"].is_string());
    let anonymous = t.client_token(&key, "chat", None, &[], &[]);
    let (_json, connected) = t.json_client("chat", &anonymous, JSON).await;
    assert_eq!(connected["userId"], Value::Null);
    assert!(connected.get("reconnectionToken").is_none());
    // webpubsub.group joined g1 at connect.
    assert_eq!(
        post_text(&t, "/api/hubs/chat/groups/g1/:send", "to g1").await,
        202
    );
    let message = next_json(&mut reliable).await;
    assert_eq!(
        (
            message["from"].as_str(),
            message["group"].as_str(),
            message["data"].as_str(),
            message["sequenceId"].as_u64()
        ),
        (Some("group"), Some("g1"), Some("to g1"), Some(1))
    );
    assert!(message.get("fromUserId").is_none());
    assert_eq!(
        t.keys().await["secondary"]["usage"]["clientConnections"],
        2,
        "both connections counted"
    );
}

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
async fn membership_existence_permissions_and_close_by_rest() {
    let t = TestServer::start().await;
    let key = t.key(KeySlot::Primary);
    let (mut a, ca) = t
        .json_client(
            "hub",
            &t.client_token(&key, "hub", Some("ua"), &[], &[]),
            JSON,
        )
        .await;
    let id = ca["connectionId"].as_str().unwrap().to_string();
    let head = |path: String| {
        let t = &t;
        async move { rest(t, reqwest::Method::HEAD, &path, None).await }
    };
    assert_eq!(head(format!("/api/hubs/hub/connections/{id}")).await, 200);
    assert_eq!(head("/api/hubs/hub/connections/nope".into()).await, 404);
    assert_eq!(head("/api/hubs/hub/users/ua".into()).await, 200);
    assert_eq!(head("/api/hubs/hub/groups/g".into()).await, 404);
    assert_eq!(
        rest(
            &t,
            reqwest::Method::PUT,
            &format!("/api/hubs/hub/groups/g/connections/{id}"),
            None
        )
        .await,
        200
    );
    assert_eq!(
        rest(
            &t,
            reqwest::Method::PUT,
            "/api/hubs/hub/groups/g/connections/nope",
            None
        )
        .await,
        404
    );
    assert_eq!(head("/api/hubs/hub/groups/g".into()).await, 200);
    assert_eq!(
        rest(
            &t,
            reqwest::Method::DELETE,
            &format!("/api/hubs/hub/connections/{id}/groups"),
            None
        )
        .await,
        204
    );
    assert_eq!(head("/api/hubs/hub/groups/g".into()).await, 404);

    // Permissions: grant lets the client join; revoke takes it away.
    let perm = format!("/api/hubs/hub/permissions/joinLeaveGroup/connections/{id}?targetName=g2");
    assert_eq!(head(perm.clone()).await, 404);
    send_json(
        &mut a,
        json!({"type": "joinGroup", "group": "g2", "ackId": 1}),
    )
    .await;
    assert_eq!(next_json(&mut a).await["error"]["name"], "Forbidden");
    assert_eq!(rest(&t, reqwest::Method::PUT, &perm, None).await, 200);
    assert_eq!(head(perm.clone()).await, 200);
    send_json(
        &mut a,
        json!({"type": "joinGroup", "group": "g2", "ackId": 2}),
    )
    .await;
    assert_eq!(next_json(&mut a).await["success"], true);
    assert_eq!(rest(&t, reqwest::Method::DELETE, &perm, None).await, 204);
    assert_eq!(head(perm).await, 404);
    assert_eq!(
        rest(
            &t,
            reqwest::Method::PUT,
            &format!("/api/hubs/hub/permissions/nope/connections/{id}"),
            None
        )
        .await,
        400
    );

    // Close with a reason: the client hears it, then the socket closes.
    assert_eq!(
        rest(
            &t,
            reqwest::Method::DELETE,
            &format!("/api/hubs/hub/connections/{id}?reason=bye%20now"),
            None
        )
        .await,
        204
    );
    let disconnected = next_json(&mut a).await;
    assert_eq!(
        (
            disconnected["event"].as_str(),
            disconnected["message"].as_str()
        ),
        (Some("disconnected"), Some("bye now"))
    );
    assert!(matches!(
        next_frame(&mut a).await,
        Some(Message::Close(_)) | None
    ));
    assert_eq!(head(format!("/api/hubs/hub/connections/{id}")).await, 404);
    assert_eq!(head("/api/hubs/hub/users/ua".into()).await, 404);
}

#[tokio::test]
async fn listing_a_group_pages_through_every_connection_once() {
    let t = TestServer::start().await;
    let key = t.key(KeySlot::Primary);
    let mut clients = Vec::new();
    let mut ids = Vec::new();
    for i in 0..5 {
        let (ws, c) = t
            .json_client(
                "hub",
                &t.client_token(&key, "hub", Some(&format!("u{i}")), &[], &["g"]),
                JSON,
            )
            .await;
        ids.push(c["connectionId"].as_str().unwrap().to_string());
        clients.push(ws);
    }
    let mut listed = Vec::new();
    let mut next =
        Some("/api/hubs/hub/groups/g/connections?maxpagesize=2&api-version=2024-12-01".to_string());
    while let Some(path) = next {
        let token = t.rest_token(&key, &path);
        let page: Value = t
            .http
            .get(t.public_url(&path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(page["value"].as_array().unwrap().len() <= 2);
        for item in page["value"].as_array().unwrap() {
            listed.push(item["connectionId"].as_str().unwrap().to_string());
            assert!(item["userId"].as_str().unwrap().starts_with('u'));
        }
        next = page["nextLink"].as_str().map(str::to_owned);
    }
    listed.sort();
    ids.sort();
    assert_eq!(listed, ids);
}

#[tokio::test]
async fn key_rotation_keeps_live_connections_and_gates_new_ones() {
    let t = TestServer::start().await;
    let old_primary = t.key(KeySlot::Primary);
    let secondary = t.key(KeySlot::Secondary);
    let (mut ws, _) = t
        .json_client(
            "hub",
            &t.client_token(&old_primary, "hub", None, &[], &["g"]),
            RELIABLE,
        )
        .await;
    for (i, slot) in ["Primary", "Secondary", "Salt"].into_iter().enumerate() {
        t.regenerate(slot).await;
        let status = rest_with(
            &t,
            &t.key(KeySlot::Primary),
            "/api/hubs/hub/groups/g/:send",
            &format!("after {slot}"),
        )
        .await;
        assert_eq!(status, 202);
        let got = next_json(&mut ws).await;
        assert_eq!(got["data"], format!("after {slot}"));
        assert_eq!(got["sequenceId"], i as u64 + 1);
    }
    let old = t.client_token(&old_primary, "hub", None, &[], &[]);
    assert_eq!(
        t.ws_connect(&format!("/client/hubs/hub?access_token={old}"), Some(JSON))
            .await
            .err(),
        Some(401)
    );
    let old_secondary = t.client_token(&secondary, "hub", None, &[], &[]);
    assert_eq!(
        t.ws_connect(
            &format!("/client/hubs/hub?access_token={old_secondary}"),
            Some(JSON)
        )
        .await
        .err(),
        Some(401)
    );
    let fresh = t.client_token(&t.key(KeySlot::Secondary), "hub", None, &[], &[]);
    assert!(t
        .ws_connect(
            &format!("/client/hubs/hub?access_token={fresh}"),
            Some(JSON)
        )
        .await
        .is_ok());
}

async fn rest_with(t: &TestServer, key: &str, path: &str, text: &str) -> u16 {
    let full = format!("{path}?api-version=2024-12-01");
    t.http
        .post(t.public_url(&full))
        .bearer_auth(t.rest_token(key, &full))
        .header("content-type", "text/plain")
        .body(text.to_string())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Drops the TCP connection without a close frame, as a network cut does.
fn cut(ws: Ws) {
    drop(ws);
}

#[tokio::test]
async fn reliable_sessions_resume_after_a_cut_even_across_an_access_key_rotation() {
    let t = TestServer::start().await;
    let key = t.key(KeySlot::Primary);
    let token = t.client_token(&key, "hub", Some("u"), &[], &["g"]);
    let (mut ws, connected) = t.json_client("hub", &token, RELIABLE).await;
    let id = connected["connectionId"].as_str().unwrap().to_string();
    let reconnect = connected["reconnectionToken"].as_str().unwrap().to_string();
    post_text(&t, "/api/hubs/hub/groups/g/:send", "m1").await;
    assert_eq!(next_json(&mut ws).await["sequenceId"], 1);
    send_json(&mut ws, json!({"type": "sequenceAck", "sequenceId": 1})).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    cut(ws);
    // While cut: messages are buffered, and the primary key is rotated.
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            post_text(&t, "/api/hubs/hub/groups/g/:send", "probe").await == 202
                && rest(
                    &t,
                    reqwest::Method::HEAD,
                    &format!("/api/hubs/hub/connections/{id}"),
                    None,
                )
                .await
                    == 200
        })
        .await
    );
    post_text(&t, "/api/hubs/hub/groups/g/:send", "m2").await;
    t.regenerate("Primary").await;
    // The client reconnects with the same (now invalid, old-key) access token plus recovery params.
    let url = format!("/client/hubs/hub?access_token={token}&awps_connection_id={id}&awps_reconnection_token={reconnect}");
    let (mut resumed, chosen) = t
        .ws_connect(&url, Some(RELIABLE))
        .await
        .expect("recovery upgrade");
    assert_eq!(chosen.as_deref(), Some(RELIABLE));
    let again = next_json(&mut resumed).await;
    assert_eq!(again["connectionId"], id.as_str());
    let mut data = Vec::new();
    let mut sequence = Vec::new();
    while data.last().map(String::as_str) != Some("m2") {
        let m = next_json(&mut resumed).await;
        data.push(m["data"].as_str().unwrap().to_string());
        sequence.push(m["sequenceId"].as_u64().unwrap());
    }
    assert!(
        !data.contains(&"m1".to_string()),
        "acknowledged messages are not re-sent"
    );
    assert!(sequence.windows(2).all(|w| w[0] < w[1]), "{sequence:?}");
    assert_eq!(sequence.first(), Some(&2));

    // A wrong reconnection token, or one from before a salt rotation, is closed with 1008.
    cut(resumed);
    t.regenerate("Salt").await;
    let url =
        format!("/client/hubs/hub?awps_connection_id={id}&awps_reconnection_token={reconnect}");
    let (mut refused, _) = t
        .ws_connect(&url, Some(RELIABLE))
        .await
        .expect("upgrade, then close");
    match next_frame(&mut refused).await {
        Some(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1008),
        other => panic!("expected a 1008 close, got {other:?}"),
    }
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

#[tokio::test]
async fn bad_frames_get_error_acks_or_a_clear_close_and_others_are_unaffected() {
    let t = TestServer::start().await;
    let key = t.key(KeySlot::Primary);
    let (mut bystander, _) = t
        .json_client("hub", &t.client_token(&key, "hub", None, &[], &["g"]), JSON)
        .await;
    let (mut c, _) = t
        .json_client(
            "hub",
            &t.client_token(&key, "hub", None, ALL_ROLES, &[]),
            JSON,
        )
        .await;

    send_json(&mut c, json!({"type": "nonsense", "ackId": 1})).await;
    assert_eq!(next_json(&mut c).await["error"]["name"], "BadRequest");
    send_json(&mut c, json!({"type": "nonsense"})).await; // ignored, connection lives
    send_json(&mut c, json!({"type": "joinGroup", "ackId": 2})).await;
    assert_eq!(next_json(&mut c).await["error"]["name"], "BadRequest");
    send_json(&mut c, json!({"type": "sendToGroup", "group": "g", "ackId": 3, "dataType": "binary", "data": "%%%"})).await;
    assert_eq!(next_json(&mut c).await["error"]["name"], "BadRequest");
    send_json(
        &mut c,
        json!({"type": "joinGroup", "group": "x".repeat(1025), "ackId": 4}),
    )
    .await;
    assert_eq!(next_json(&mut c).await["error"]["name"], "BadRequest");
    send_json(&mut c, json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut c).await["type"], "pong", "still alive");

    c.send(Message::Text("not json".into())).await.unwrap();
    let bye = next_json(&mut c).await;
    assert_eq!(bye["event"], "disconnected");
    assert!(bye["message"].as_str().unwrap().contains("Invalid message"));
    match next_frame(&mut c).await {
        Some(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1008),
        other => panic!("expected close 1008, got {other:?}"),
    }

    let (mut big, _) = t
        .json_client("hub", &t.client_token(&key, "hub", None, &[], &[]), JSON)
        .await;
    let oversized = "x".repeat(1024 * 1024 + 1);
    let _ = big.send(Message::Text(oversized.into())).await;
    let mut saw_close = None;
    while let Some(frame) = next_frame(&mut big).await {
        if let Message::Close(frame) = frame {
            saw_close = frame.map(|f| u16::from(f.code));
            break;
        }
    }
    assert_eq!(saw_close, Some(1009));

    post_text(&t, "/api/hubs/hub/groups/g/:send", "still fine").await;
    assert_eq!(next_json(&mut bystander).await["data"], "still fine");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_as_slow_without_unbounded_buffering() {
    let t = TestServer::start().await;
    let key = t.key(KeySlot::Primary);
    let (_slow, connected) = t
        .json_client("hub", &t.client_token(&key, "hub", None, &[], &["g"]), JSON)
        .await;
    let id = connected["connectionId"].as_str().unwrap().to_string();
    let (mut publisher, _) = t
        .json_client(
            "hub",
            &t.client_token(&key, "hub", None, &["webpubsub.sendToGroup"], &[]),
            JSON,
        )
        .await;
    let payload = "y".repeat(1000);
    for _ in 0..30_000 {
        publisher
            .feed(Message::Text(
                json!({"type": "sendToGroup", "group": "g", "dataType": "text", "data": payload})
                    .to_string()
                    .into(),
            ))
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    let gone = common::eventually(Duration::from_secs(20), || async {
        rest(
            &t,
            reqwest::Method::HEAD,
            &format!("/api/hubs/hub/connections/{id}"),
            None,
        )
        .await
            == 404
    })
    .await;
    assert!(gone, "the slow client was dropped");
    send_json(&mut publisher, json!({"type": "ping"})).await;
    assert_eq!(
        next_json(&mut publisher).await["type"],
        "pong",
        "the publisher is unaffected"
    );
}

#[tokio::test]
async fn generated_tokens_are_salt_signed_and_revoked_by_a_salt_rotation() {
    let t = TestServer::start().await;
    let path = "/api/hubs/Hub/:generateToken?userId=gen&role=webpubsub.joinLeaveGroup&group=g1&minutesToExpire=5&api-version=2024-12-01";
    let response = t
        .http
        .post(t.public_url(path))
        .bearer_auth(t.rest_token(&t.key(KeySlot::Secondary), path))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let token = response.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let decoded = hubbub_proto::jwt::decode(&token).unwrap();
    assert!(decoded.kid.as_deref().unwrap().starts_with("s-"));
    assert_eq!(decoded.claims.0["exp"].as_i64().unwrap() - t.now(), 300);
    let (mut ws, connected) = t.json_client("hub", &token, JSON).await;
    assert_eq!(connected["userId"], "gen");
    post_text(&t, "/api/hubs/hub/groups/g1/:send", "to g1").await;
    assert_eq!(next_json(&mut ws).await["data"], "to g1");
    send_json(
        &mut ws,
        json!({"type": "joinGroup", "group": "g2", "ackId": 1}),
    )
    .await;
    assert_eq!(
        next_json(&mut ws).await["success"],
        true,
        "the role came from the token"
    );

    t.regenerate("Salt").await;
    let refused = t
        .ws_connect(
            &format!("/client/hubs/hub?access_token={token}"),
            Some(JSON),
        )
        .await;
    assert_eq!(refused.err(), Some(401));
    let bad = "/api/hubs/hub/:generateToken?clientType=MQTT&api-version=2024-12-01";
    let status = t
        .http
        .post(t.public_url(bad))
        .bearer_auth(t.rest_token(&t.key(KeySlot::Primary), bad))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_silent_peer_is_closed_after_three_keep_alive_intervals() {
    let t = TestServer::start_with(hubbub_server::Settings {
        keep_alive_secs: Some(1),
        ..Default::default()
    })
    .await;
    let key = t.key(KeySlot::Primary);
    let (mut ws, connected) = t
        .json_client("hub", &t.client_token(&key, "hub", None, &[], &[]), JSON)
        .await;
    let id = connected["connectionId"].as_str().unwrap().to_string();
    // Not reading means not answering the server's pings.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_eq!(
        rest(
            &t,
            reqwest::Method::HEAD,
            &format!("/api/hubs/hub/connections/{id}"),
            None
        )
        .await,
        404
    );
    let bye = next_json(&mut ws).await;
    assert_eq!(bye["message"], "PingTimeout");
    // A client that answers pings stays.
    let (mut alive, connected) = t
        .json_client("hub", &t.client_token(&key, "hub", None, &[], &[]), JSON)
        .await;
    let id = connected["connectionId"].as_str().unwrap().to_string();
    assert!(
        silent_for(&mut alive, Duration::from_millis(4500)).await,
        "reading answers pings automatically"
    );
    assert_eq!(
        rest(
            &t,
            reqwest::Method::HEAD,
            &format!("/api/hubs/hub/connections/{id}"),
            None
        )
        .await,
        200
    );
}

#[tokio::test]
async fn a_client_close_is_answered_and_ends_the_connection_at_once() {
    let t = TestServer::start().await;
    let key = t.key(KeySlot::Primary);
    let (mut ws, connected) = t
        .json_client(
            "hub",
            &t.client_token(&key, "hub", Some("closer"), &[], &[]),
            RELIABLE,
        )
        .await;
    let id = connected["connectionId"].as_str().unwrap().to_string();
    ws.close(None).await.unwrap();
    // tungstenite hands the peer's close reply to the reader as a Close frame.
    match next_frame(&mut ws).await {
        Some(Message::Close(_)) => {}
        other => panic!("expected the server's close reply, got {other:?}"),
    }
    // A reliable client that closed on purpose is not kept for resumption.
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            rest(
                &t,
                reqwest::Method::HEAD,
                &format!("/api/hubs/hub/connections/{id}"),
                None,
            )
            .await
                == 404
        })
        .await
    );
}
