//! Revoke, and optionally disconnect: a new value now, no earlier value accepted, and with
//! `disconnect` exactly the live connections whose token a value of that key signed are closed
//! (a reliable session among them cannot be resumed); the other key's connections stay.
//! Audited with the number closed.

mod common;

use common::{next_frame, next_json, TestServer};
use hubbub_proto::keys::KeySlot;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

const JSON: &str = "json.webpubsub.azure.v1";
const RELIABLE: &str = "json.reliable.webpubsub.azure.v1";

/// The close frame a client gets next (skipping messages).
async fn closed_with(ws: &mut common::Ws) -> (u16, String) {
    loop {
        match next_frame(ws).await {
            Some(Message::Close(Some(frame))) => {
                return (u16::from(frame.code), frame.reason.to_string())
            }
            Some(Message::Text(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn revoke_with_disconnect_closes_exactly_the_connections_that_key_signed() {
    let t = TestServer::start().await;
    let primary = t.key(KeySlot::Primary);
    let secondary = t.key(KeySlot::Secondary);
    let token = |key: &str, user: &str| t.client_token(key, "chat", Some(user), &[], &[]);
    let (mut on_primary, _) = t.json_client("chat", &token(&primary, "p1"), JSON).await;
    let (mut reliable, connected) = t
        .json_client("chat", &token(&primary, "p2"), RELIABLE)
        .await;
    let (mut on_secondary, _) = t.json_client("chat", &token(&secondary, "s1"), JSON).await;

    let response = t
        .admin_post(
            "/admin/keys/revoke",
            json!({"keyType": "Primary", "disconnect": true}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let view: serde_json::Value = response.json().await.unwrap();
    assert_eq!(view["closedConnections"], 2, "{view}");
    assert_eq!(view["revoked"]["version"], 1, "{view}");
    assert_ne!(view["primaryKey"], primary.as_str(), "a new value");

    // A JSON client is closed normally; a reliable one with 1008, so it does not try to resume.
    for (ws, expected) in [(&mut on_primary, 1000), (&mut reliable, 1008)] {
        let (code, reason) = closed_with(ws).await;
        assert_eq!(code, expected, "{reason}");
        assert!(
            reason.contains("primary key") && reason.contains("revoked"),
            "{reason}"
        );
    }
    // The secondary's connection stays, and hears a broadcast.
    assert_eq!(t.send_with_key(&secondary).await, 202);
    let message = next_json(&mut on_secondary).await;
    assert_eq!(message["type"], "message", "{message}");
    // The reliable session cannot be resumed.
    let id = connected["connectionId"].as_str().unwrap();
    let reconnection = connected["reconnectionToken"].as_str().unwrap();
    let resume = format!(
        "/client/hubs/chat?awps_connection_id={id}&awps_reconnection_token={}",
        url::form_urlencoded::byte_serialize(reconnection.as_bytes()).collect::<String>()
    );
    match t.ws_connect(&resume, Some(RELIABLE)).await {
        Err(status) => assert!(status >= 400, "{status}"),
        Ok((mut ws, _)) => {
            let (code, _) = closed_with(&mut ws).await;
            assert_eq!(code, 1008, "a revoked session is gone");
        }
    }
    // The old value is refused, as stale.
    assert_eq!(t.send_with_key(&primary).await, 401);

    let audit = t.admin_json("/admin/audit?limit=50").await;
    let events: Vec<&serde_json::Value> = audit["value"].as_array().unwrap().iter().collect();
    let revoked = events
        .iter()
        .find(|e| e["event"] == "revoked")
        .expect("revoked audited");
    assert_eq!(revoked["slot"], "primary");
    let closed = events
        .iter()
        .find(|e| e["event"] == "connections_closed")
        .expect("the closed connections audited");
    assert!(
        closed["detail"]
            .as_str()
            .unwrap()
            .starts_with("2 connection(s)"),
        "{closed}"
    );
}

#[tokio::test]
async fn revoke_without_disconnect_leaves_open_connections_and_bad_input_changes_nothing() {
    let t = TestServer::start().await;
    let primary = t.key(KeySlot::Primary);
    let token = t.client_token(&primary, "chat", Some("u"), &[], &[]);
    let (mut open, _) = t.json_client("chat", &token, JSON).await;
    let response = t
        .admin_post("/admin/keys/revoke", json!({"keyType": "primary"}))
        .await;
    assert_eq!(response.status(), 200);
    let view: serde_json::Value = response.json().await.unwrap();
    assert_eq!(view["closedConnections"], 0);
    assert_eq!(view["disconnect"], false);
    let new = t.key(KeySlot::Primary);
    assert_eq!(t.send_with_key(&new).await, 202);
    assert_eq!(next_json(&mut open).await["type"], "message", "still open");
    // Bad input: a clear 400, nothing changed.
    for body in [json!({"keyType": "tertiary"}), json!({"disconnect": true})] {
        let response = t.admin_post("/admin/keys/revoke", body).await;
        assert_eq!(response.status(), 400);
    }
    assert_eq!(t.key(KeySlot::Primary), new);
}
