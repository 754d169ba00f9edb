//! Key rotation and recovery: live connections outlast a rotation while new ones need the new
//! keys, and a reliable session resumes after a cut even across an access key rotation.

use crate::common::{self, next_frame, next_json, send_json, TestServer};
use crate::support::{connection_status, cut, post_text, JSON, RELIABLE};
use hubbub_proto::keys::KeySlot;
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

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
        let status = post_text(&t, "/api/hubs/hub/groups/g/:send", &format!("after {slot}")).await;
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
                && connection_status(&t, &id).await == 200
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
