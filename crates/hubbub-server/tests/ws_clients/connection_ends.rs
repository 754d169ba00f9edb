//! How connections end: bad frames get error acks or a clear close without harming others, a
//! client that stops reading is dropped as slow, a silent peer is closed after three keep-alive
//! intervals, and a client's close ends its connection at once.

use crate::common::{self, next_frame, next_json, send_json, silent_for, TestServer};
use crate::support::{connection_status, post_text, ALL_ROLES, JSON, RELIABLE};
use futures_util::SinkExt;
use hubbub_proto::keys::KeySlot;
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

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
        connection_status(&t, &id).await == 404
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
    assert_eq!(connection_status(&t, &id).await, 404);
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
    assert_eq!(connection_status(&t, &id).await, 200);
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
            connection_status(&t, &id).await == 404
        })
        .await
    );
}

#[tokio::test]
async fn a_close_reason_longer_than_a_close_frame_holds_is_cut_on_a_character_boundary() {
    let t = TestServer::start().await;
    let key = t.key(KeySlot::Primary);
    let token = t.client_token(&key, "hub", None, &[], &[]);
    let (mut closed, connected) = t.json_client("hub", &token, JSON).await;
    let (mut bystander, _) = t.json_client("hub", &token, JSON).await;
    let id = connected["connectionId"].as_str().unwrap().to_string();
    // 200 two-byte characters: 400 bytes, more than the 123 a close frame's reason may have.
    let reason = "é".repeat(200);
    let encoded: String = url::form_urlencoded::byte_serialize(reason.as_bytes()).collect();
    let path = format!("/api/hubs/hub/connections/{id}?reason={encoded}");
    assert_eq!(
        crate::support::rest(&t, reqwest::Method::DELETE, &path, None).await,
        204
    );
    let disconnected = next_json(&mut closed).await;
    assert_eq!(
        disconnected["message"].as_str(),
        Some(reason.as_str()),
        "the disconnected message carries the whole reason"
    );
    match next_frame(&mut closed).await {
        Some(Message::Close(Some(frame))) => {
            assert_eq!(u16::from(frame.code), 1000);
            assert_eq!(
                frame.reason.len(),
                122,
                "cut to fit, on a character boundary"
            );
            assert!(reason.starts_with(frame.reason.as_str()));
        }
        other => panic!("expected a valid close frame, got {other:?}"),
    }
    // The other connection is untouched.
    assert_eq!(
        post_text(&t, "/api/hubs/hub/:send", "still here").await,
        202
    );
    assert_eq!(next_json(&mut bystander).await["data"], "still here");
}
