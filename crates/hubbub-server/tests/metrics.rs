//! `/metrics` counts the data plane: messages and bytes per hub, connections opened and closed
//! (and why), REST calls by operation and status with their duration, refused tokens by reason,
//! and event-handler calls; no label carries a key, a token or a payload.

mod common;

use common::{eventually, next_json, send_json, TestServer};
use hubbub_proto::keys::KeySlot;
use serde_json::json;
use std::time::Duration;

const JSON: &str = "json.webpubsub.azure.v1";

async fn metric(t: &TestServer, series: &str) -> f64 {
    t.metric(series).await.unwrap_or(0.0)
}

#[tokio::test]
async fn rest_sends_count_every_delivery_and_every_byte() {
    let t = TestServer::start().await;
    let key = t.key(KeySlot::Primary);
    const CLIENTS: usize = 3;
    const SENDS: usize = 4;
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let roles = ["webpubsub.sendToGroup"];
        let token = t.client_token(&key, "counted", Some(&format!("u{i}")), &roles, &[]);
        clients.push(t.json_client("counted", &token, JSON).await.0);
    }
    let before = metric(&t, r#"hubbub_messages_delivered_total{hub="counted"}"#).await;
    for _ in 0..SENDS {
        let path = "/api/hubs/counted/:send?api-version=2024-12-01";
        let response = t
            .rest_request(reqwest::Method::POST, &key, path)
            .header("content-type", "text/plain")
            .body("twelve bytes")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    for ws in &mut clients {
        for _ in 0..SENDS {
            assert_eq!(next_json(ws).await["data"], "twelve bytes");
        }
    }
    let delivered = metric(&t, r#"hubbub_messages_delivered_total{hub="counted"}"#).await;
    assert_eq!(delivered - before, (SENDS * CLIENTS) as f64);
    assert_eq!(
        metric(
            &t,
            r#"hubbub_messages_received_total{hub="counted",source="rest"}"#
        )
        .await,
        SENDS as f64
    );
    // Each client got its `connected` message and the sends as JSON frames holding the data.
    let sent = metric(&t, r#"hubbub_bytes_sent_total{hub="counted"}"#).await;
    assert!(
        sent >= (SENDS * CLIENTS * "twelve bytes".len()) as f64,
        "{sent}"
    );
    assert_eq!(
        metric(
            &t,
            r#"hubbub_connections_opened_total{hub="counted",protocol="json.webpubsub.azure.v1"}"#
        )
        .await,
        CLIENTS as f64
    );
    assert_eq!(
        metric(
            &t,
            r#"hubbub_rest_requests_total{operation="sendToAll",status="202"}"#
        )
        .await,
        SENDS as f64
    );
    assert_eq!(
        metric(
            &t,
            r#"hubbub_rest_request_duration_seconds_count{operation="sendToAll"}"#
        )
        .await,
        SENDS as f64
    );

    // A client's group message counts as received from a client, with its bytes.
    let ws = &mut clients[0];
    let received_bytes = metric(&t, r#"hubbub_bytes_received_total{hub="counted"}"#).await;
    send_json(
        ws,
        json!({"type": "sendToGroup", "group": "nobody", "dataType": "text", "data": "hi"}),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            metric(
                &t,
                r#"hubbub_messages_received_total{hub="counted",source="client"}"#,
            )
            .await
                == 1.0
        })
        .await
    );
    assert!(metric(&t, r#"hubbub_bytes_received_total{hub="counted"}"#).await > received_bytes);

    let text = t.admin_text("/metrics").await;
    assert!(!text.contains(&key), "no key in the metrics");
    assert!(!text.contains("twelve bytes"), "no payload in the metrics");
}

#[tokio::test]
async fn closes_count_by_reason_and_refused_tokens_by_reason() {
    let t = TestServer::start().await;
    let key = t.key(KeySlot::Primary);
    let token = t.client_token(&key, "closing", Some("ann"), &[], &[]);
    let (mut ws, connected) = t.json_client("closing", &token, JSON).await;
    let id = connected["connectionId"].as_str().unwrap().to_string();
    let path = format!("/api/hubs/closing/connections/{id}?reason=rotating&api-version=2024-12-01");
    let close = t
        .rest_request(reqwest::Method::DELETE, &key, &path)
        .send()
        .await
        .unwrap();
    assert_eq!(close.status(), 204);
    assert_eq!(next_json(&mut ws).await["message"], "rotating");
    assert_eq!(
        metric(
            &t,
            r#"hubbub_connections_closed_total{hub="closing",reason="rest_close"}"#
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &t,
            r#"hubbub_rest_requests_total{operation="closeConnection",status="204"}"#
        )
        .await,
        1.0
    );

    // A client that closes its own socket.
    let token = t.client_token(&key, "closing", Some("bob"), &[], &[]);
    let (mut ws, _) = t.json_client("closing", &token, JSON).await;
    ws.close(None).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            metric(
                &t,
                r#"hubbub_connections_closed_total{hub="closing",reason="client"}"#,
            )
            .await
                == 1.0
        })
        .await
    );

    // Refused tokens: a bad signature on a connection, an expired REST token, none at all.
    let forged = format!("{token}x");
    let refused = t
        .ws_connect(
            &format!("/client/hubs/closing?access_token={forged}"),
            Some(JSON),
        )
        .await;
    assert_eq!(refused.err(), Some(401));
    let expired = common::sign(
        json!({
            "iat": t.now() - 7200,
            "exp": t.now() - 3600,
            "aud": format!("{}/api/hubs/closing/:send?api-version=2024-12-01", t.endpoint())
        }),
        &key,
    );
    assert_eq!(t.send_to_all("closing", &expired).await.status(), 401);
    let none = t
        .http
        .post(t.public_url("/api/hubs/closing/:send?api-version=2024-12-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 401);
    for (series, count) in [
        (
            r#"hubbub_auth_failures_total{kind="connection",reason="bad_signature"}"#,
            1.0,
        ),
        (
            r#"hubbub_auth_failures_total{kind="rest",reason="expired"}"#,
            1.0,
        ),
        (
            r#"hubbub_auth_failures_total{kind="rest",reason="missing"}"#,
            1.0,
        ),
        (
            r#"hubbub_rest_requests_total{operation="sendToAll",status="401"}"#,
            2.0,
        ),
    ] {
        assert_eq!(metric(&t, series).await, count, "{series}");
    }
    let text = t.admin_text("/metrics").await;
    assert!(!text.contains(&token[20..]), "no token in the metrics");
}
