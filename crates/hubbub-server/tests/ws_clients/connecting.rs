//! Connecting: upgrades without a valid token are refused, each subprotocol gets its
//! `connected` message with the token's groups joined, and generated tokens are signed with the
//! salt and revoked by its rotation.

use crate::common::{self, next_json, send_json, TestServer};
use crate::support::{post_text, JSON, RELIABLE};
use hubbub_proto::keys::KeySlot;
use reqwest::Method;
use serde_json::{json, Value};

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
    // The protobuf subprotocols are served too.
    for protocol in [
        "protobuf.webpubsub.azure.v1",
        "protobuf.reliable.webpubsub.azure.v1",
    ] {
        let (_, chosen) = t
            .ws_connect(
                &format!("/client/hubs/chat?access_token={token}"),
                Some(protocol),
            )
            .await
            .unwrap();
        assert_eq!(chosen.as_deref(), Some(protocol));
    }
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
async fn generated_tokens_are_salt_signed_and_revoked_by_a_salt_rotation() {
    let t = TestServer::start().await;
    let path = "/api/hubs/Hub/:generateToken?userId=gen&role=webpubsub.joinLeaveGroup&group=g1&minutesToExpire=5&api-version=2024-12-01";
    let response = t
        .rest_request(Method::POST, &t.key(KeySlot::Secondary), path)
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
    let mqtt = "/api/hubs/hub/:generateToken?clientType=mqtt&api-version=2024-12-01";
    let response = t
        .rest_request(Method::POST, &t.key(KeySlot::Primary), mqtt)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let token = response.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let aud = hubbub_proto::jwt::decode(&token).unwrap().claims.0["aud"].clone();
    assert!(
        aud.as_str().unwrap().ends_with("/clients/mqtt/hubs/hub"),
        "{aud}"
    );
    let refused = t
        .ws_connect(
            &format!("/client/hubs/hub?access_token={token}"),
            Some(JSON),
        )
        .await;
    assert_eq!(
        refused.err(),
        Some(401),
        "an MQTT token is for MQTT clients"
    );
    let bad = "/api/hubs/hub/:generateToken?clientType=SocketIO&api-version=2024-12-01";
    let status = t
        .rest_request(Method::POST, &t.key(KeySlot::Primary), bad)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 400);
}
