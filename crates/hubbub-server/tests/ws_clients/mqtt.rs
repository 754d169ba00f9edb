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
    connect_v5_with(client_id, true)
}

/// An MQTT 5 CONNECT; without a clean start it asks for a 60 s session expiry.
fn connect_v5_with(client_id: &str, clean_start: bool) -> Vec<u8> {
    let mut body = if clean_start {
        vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0]
    } else {
        vec![
            0, 4, b'M', b'Q', b'T', b'T', 5, 0x00, 0, 60, 5, 0x11, 0, 0, 0, 60,
        ]
    };
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

#[tokio::test]
async fn unacknowledged_messages_are_sent_again_marked_dup_when_the_session_resumes() {
    let t = TestServer::start().await;
    let mut first = mqtt_socket(&t, "hub").await;
    send(&mut first, &connect_v5_with("keep1", false)).await;
    let connack = next_packet(&mut first).await;
    assert_eq!(
        (connack[2], connack[3]),
        (0, 0),
        "no session yet: {connack:?}"
    );
    send(&mut first, &subscribe_v5("room")).await;
    assert_eq!(next_packet(&mut first).await[0], 0x90);
    post_text(&t, "/api/hubs/hub/groups/room/:send", "one").await;
    let publish = next_packet(&mut first).await;
    assert_eq!(publish[0], 0x32, "QoS 1, not a duplicate: {publish:?}");
    // Gone without a PUBACK or a DISCONNECT.
    drop(first);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    post_text(&t, "/api/hubs/hub/groups/room/:send", "two").await;

    let mut second = mqtt_socket(&t, "hub").await;
    send(&mut second, &connect_v5_with("keep1", false)).await;
    let connack = next_packet(&mut second).await;
    assert_eq!(
        (connack[2], connack[3]),
        (1, 0),
        "session present: {connack:?}"
    );
    let again = next_packet(&mut second).await;
    assert_eq!(again[0], 0x3a, "sent again, marked DUP: {again:?}");
    assert!(again.ends_with(b"one"));
    let id = hubbub_proto::mqtt::packet_id_of(&again).expect("a packet id");
    let meanwhile = next_packet(&mut second).await;
    assert_eq!(meanwhile[0], 0x3a, "queued while away, also unacknowledged");
    assert!(meanwhile.ends_with(b"two"));
    // Acknowledged, the first is not sent again on the next resume; the second is.
    let [hi, lo] = id.to_be_bytes();
    send(&mut second, &[0x40, 2, hi, lo]).await;
    send(&mut second, &[0xc0, 0]).await;
    assert_eq!(
        next_packet(&mut second).await,
        [0xd0, 0],
        "the PUBACK was read"
    );
    drop(second);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut third = mqtt_socket(&t, "hub").await;
    send(&mut third, &connect_v5_with("keep1", false)).await;
    assert_eq!(next_packet(&mut third).await[2], 1);
    let left = next_packet(&mut third).await;
    assert!(
        left.ends_with(b"two"),
        "only the unacknowledged one: {left:?}"
    );
}

#[tokio::test]
async fn a_qos_0_publish_reaches_a_qos_1_subscription_at_qos_0() {
    let t = TestServer::start().await;
    let mut subscriber = mqtt_socket(&t, "hub").await;
    send(&mut subscriber, &connect_v5("sub1")).await;
    assert_eq!(next_packet(&mut subscriber).await[0], 0x20);
    send(&mut subscriber, &subscribe_v5("room")).await;
    assert_eq!(next_packet(&mut subscriber).await, [0x90, 4, 0, 1, 0, 1]);
    let mut publisher = mqtt_socket(&t, "hub").await;
    send(&mut publisher, &connect_v5("pub1")).await;
    assert_eq!(next_packet(&mut publisher).await[0], 0x20);
    // PUBLISH at QoS 0 to "room", no properties, payload "hi".
    send(
        &mut publisher,
        &[0x30, 9, 0, 4, b'r', b'o', b'o', b'm', 0, b'h', b'i'],
    )
    .await;
    let got = next_packet(&mut subscriber).await;
    assert_eq!(got[0], 0x30, "at QoS 0, as published: {got:?}");
    assert!(got.ends_with(b"hi"));
    post_text(&t, "/api/hubs/hub/groups/room/:send", "rest").await;
    assert_eq!(
        next_packet(&mut subscriber).await[0],
        0x32,
        "REST sends at the granted QoS 1"
    );
}
