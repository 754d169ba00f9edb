//! MQTT clients byte by byte (the SDK suites drive mqtt.js and Paho): packets split across
//! WebSocket frames and several in one, a packet over the limit, a client id a WebSocket client
//! holds.

use crate::common::{next_frame, next_json, TestServer};
use crate::support::{post_text, ALL_ROLES, JSON};
use futures_util::SinkExt;
use hubbub_proto::keys::KeySlot;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// An MQTT 5 CONNECT with a clean start and a 60 s keep-alive.
fn connect_v5(client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0];
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

/// SUBSCRIBE (MQTT 5) to `topic` at QoS 1, packet id 1.
fn subscribe_v5(topic: &str) -> Vec<u8> {
    let mut body = vec![0, 1, 0];
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.push(1);
    let mut packet = vec![0x82, body.len() as u8];
    packet.extend(body);
    packet
}

fn mqtt_token(t: &TestServer, hub: &str) -> String {
    let now = t.now();
    crate::common::sign(
        json!({
            "aud": format!("{}/clients/mqtt/hubs/{hub}", t.endpoint()),
            "iat": now,
            "exp": now + 3600,
            "role": ALL_ROLES,
        }),
        &t.key(KeySlot::Primary),
    )
}

async fn mqtt_socket(t: &TestServer, hub: &str) -> crate::common::Ws {
    let (ws, chosen) = t
        .ws_connect(
            &format!(
                "/clients/mqtt/hubs/{hub}?access_token={}",
                mqtt_token(t, hub)
            ),
            Some("mqtt"),
        )
        .await
        .expect("upgrade accepted");
    assert_eq!(chosen.as_deref(), Some("mqtt"));
    ws
}

async fn next_packet(ws: &mut crate::common::Ws) -> Vec<u8> {
    match next_frame(ws).await {
        Some(Message::Binary(bytes)) => bytes.to_vec(),
        other => panic!("expected an MQTT packet, got {other:?}"),
    }
}

async fn send(ws: &mut crate::common::Ws, bytes: &[u8]) {
    ws.send(Message::Binary(bytes.to_vec().into()))
        .await
        .expect("send");
}

#[tokio::test]
async fn packets_split_across_frames_or_batched_in_one_are_read_whole() {
    let t = TestServer::start().await;
    let mut ws = mqtt_socket(&t, "hub").await;
    let connect = connect_v5("split1");
    for piece in connect.chunks(4) {
        send(&mut ws, piece).await;
    }
    let connack = next_packet(&mut ws).await;
    assert_eq!(
        (connack[0], connack[2], connack[3]),
        (0x20, 0, 0),
        "{connack:?}"
    );
    // SUBSCRIBE and PINGREQ in one frame: SUBACK (granted QoS 1), then PINGRESP.
    let mut both = subscribe_v5("room");
    both.extend_from_slice(&[0xc0, 0x00]);
    send(&mut ws, &both).await;
    let suback = next_packet(&mut ws).await;
    assert_eq!(suback, [0x90, 4, 0, 1, 0, 1]);
    assert_eq!(next_packet(&mut ws).await, [0xd0, 0]);
    post_text(&t, "/api/hubs/hub/groups/room/:send", "hello").await;
    let publish = next_packet(&mut ws).await;
    assert_eq!(publish[0], 0x32, "PUBLISH at QoS 1: {publish:?}");
    assert!(publish.ends_with(b"hello"));
}

#[tokio::test]
async fn a_packet_over_the_limit_ends_only_its_connection_and_is_counted() {
    let t = TestServer::start().await;
    let token = t.client_token(&t.key(KeySlot::Primary), "hub", Some("bystander"), &[], &[]);
    let (mut bystander, _) = t.json_client("hub", &token, JSON).await;
    let mut ws = mqtt_socket(&t, "hub").await;
    send(&mut ws, &connect_v5("big1")).await;
    assert_eq!(next_packet(&mut ws).await[0], 0x20);
    // A PUBLISH announcing 2 MiB: refused from its header alone.
    send(&mut ws, &[0x30, 0x80, 0x80, 0x80, 0x01]).await;
    let disconnect = next_packet(&mut ws).await;
    assert_eq!(
        (disconnect[0], disconnect[2]),
        (0xe0, 0x95),
        "{disconnect:?}"
    );
    assert!(matches!(
        next_frame(&mut ws).await,
        Some(Message::Close(_)) | None
    ));
    assert_eq!(
        t.metric(r#"hubbub_limit_rejections_total{limit="mqtt_packet_size",listener="public"}"#)
            .await,
        Some(1.0)
    );
    post_text(&t, "/api/hubs/hub/:send", "still here").await;
    assert_eq!(next_json(&mut bystander).await["data"], "still here");
}

#[tokio::test]
async fn a_websocket_clients_id_is_not_an_mqtt_session_to_take_over() {
    let t = TestServer::start().await;
    let token = t.client_token(&t.key(KeySlot::Primary), "hub", Some("ws"), &[], &[]);
    let (mut client, connected) = t.json_client("hub", &token, JSON).await;
    let id = connected["connectionId"]
        .as_str()
        .expect("an id")
        .to_string();
    let mut ws = mqtt_socket(&t, "hub").await;
    send(&mut ws, &connect_v5(&id)).await;
    let connack = next_packet(&mut ws).await;
    assert_eq!(
        (connack[0], connack[3]),
        (0x20, 0x85),
        "refused: {connack:?}"
    );
    post_text(
        &t,
        &format!("/api/hubs/hub/connections/{id}/:send"),
        "yours",
    )
    .await;
    assert_eq!(next_json(&mut client).await["data"], "yours", "untouched");
}
