//! Listener limits: a connection that never finishes its request headers is closed while others
//! are served, idle keep-alive connections are closed but WebSockets are not, and connections
//! beyond the cap are refused with a 503 and counted while the open ones keep working.

mod common;

use common::{closed_within, eventually, raw_get, read_response, TestServer};
use hubbub_proto::keys::KeySlot;
use hubbub_server::Settings;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

const JSON: &str = "json.webpubsub.azure.v1";

#[tokio::test]
async fn a_connection_that_never_finishes_its_headers_is_closed_while_others_are_served() {
    let t = TestServer::start_with(Settings {
        http_header_timeout_secs: Some(1),
        ..Settings::default()
    })
    .await;
    let mut normal = t.raw_public().await;
    assert_eq!(raw_get(&mut normal, "/api/health").await.unwrap().0, 200);

    let started = Instant::now();
    let mut slow = t.raw_public().await;
    slow.write_all(b"GET /api/health HT").await.unwrap();
    // While the slow one waits, the normal connection keeps getting answers.
    let closer = tokio::spawn(async move {
        let closed = closed_within(&mut slow, Duration::from_secs(10)).await;
        (closed, started.elapsed())
    });
    let mut answered = 0;
    while !closer.is_finished() {
        assert_eq!(raw_get(&mut normal, "/api/health").await.unwrap().0, 200);
        answered += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (closed, after) = closer.await.unwrap();
    assert!(closed, "the half-sent request is closed within 10 s");
    assert!(
        after >= Duration::from_millis(900),
        "not before the header timeout: {after:?}"
    );
    assert!(answered >= 1, "the other connection was served meanwhile");
    // The served connection is still open: it sent its requests in time.
    assert_eq!(raw_get(&mut normal, "/api/health").await.unwrap().0, 200);
    assert_eq!(
        t.metric("hubbub_limit_rejections_total{limit=\"header_timeout\",listener=\"public\"}")
            .await,
        Some(1.0)
    );

    // A connection that sends nothing at all is closed the same way.
    let mut silent = t.raw_public().await;
    assert!(closed_within(&mut silent, Duration::from_secs(10)).await);
    // So is a later request on a served connection whose headers stop half-way.
    normal.write_all(b"GET /api/he").await.unwrap();
    assert!(closed_within(&mut normal, Duration::from_secs(10)).await);
    assert!(
        eventually(Duration::from_secs(10), || async {
            t.metric("hubbub_limit_rejections_total{limit=\"header_timeout\",listener=\"public\"}")
                .await
                == Some(3.0)
        })
        .await
    );
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_but_websockets_are_not() {
    let t = TestServer::start_with(Settings {
        http_idle_timeout_secs: Some(1),
        ..Settings::default()
    })
    .await;
    let key = t.key(KeySlot::Primary);
    let (mut ws, _) = t
        .json_client("chat", &t.client_token(&key, "chat", None, &[], &[]), JSON)
        .await;
    let mut idle = t.raw_public().await;
    assert_eq!(raw_get(&mut idle, "/api/health").await.unwrap().0, 200);
    let started = Instant::now();
    assert!(closed_within(&mut idle, Duration::from_secs(10)).await);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "not before the idle timeout"
    );
    assert_eq!(
        t.metric("hubbub_http_idle_closed_total{listener=\"public\"}")
            .await,
        Some(1.0)
    );
    // The WebSocket sat silent for longer than the idle timeout and still gets messages.
    assert!(common::silent_for(&mut ws, Duration::from_millis(1500)).await);
    let token = t.rest_token(&key, "/api/hubs/chat/:send?api-version=2024-12-01");
    assert_eq!(t.send_to_all("chat", &token).await.status(), 202);
    assert_eq!(common::next_json(&mut ws).await["data"], "hello");
    assert_eq!(
        t.metric("hubbub_limit_rejections_total{limit=\"header_timeout\",listener=\"public\"}")
            .await,
        Some(0.0)
    );
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused_and_counted_while_the_others_keep_working() {
    let t = TestServer::start_with(Settings {
        max_connections: Some(3),
        ..Settings::default()
    })
    .await;
    let refused = "hubbub_limit_rejections_total{limit=\"max_connections\",listener=\"public\"}";
    let open = "hubbub_http_connections{listener=\"public\"}";
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = t.raw_public().await;
        assert_eq!(raw_get(&mut stream, "/api/health").await.unwrap().0, 200);
        held.push(stream);
    }
    assert_eq!(t.metric(open).await, Some(3.0));

    // The fourth is answered 503 with an ErrorDetail body and closed.
    let mut fourth = t.raw_public().await;
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), read_response(&mut fourth))
        .await
        .expect("an answer within 10 s")
        .expect("a 503 before the close");
    assert_eq!(status, 503);
    let detail: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(detail["code"], "ServiceUnavailable");
    assert!(closed_within(&mut fourth, Duration::from_secs(10)).await);
    assert_eq!(t.metric(refused).await, Some(1.0));
    assert_eq!(t.metric(open).await, Some(3.0));

    // The open ones are not affected.
    for stream in &mut held {
        assert_eq!(raw_get(stream, "/api/health").await.unwrap().0, 200);
    }

    // A closed connection frees its place; a WebSocket then holds it for as long as it is open.
    drop(held.pop());
    let key = t.key(KeySlot::Primary);
    let token = t.client_token(&key, "chat", None, &[], &[]);
    let path = format!("/client/hubs/chat?access_token={token}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ws = loop {
        match t.ws_connect(&path, Some(JSON)).await {
            Ok((socket, _)) => break socket,
            Err(status) => assert_eq!(status, 503),
        }
        assert!(
            Instant::now() < deadline,
            "the closed connection's place is given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(common::next_json(&mut ws).await["event"], "connected");
    let before = t.metric(refused).await.unwrap();
    let mut another = t.raw_public().await;
    let (status, _) = tokio::time::timeout(Duration::from_secs(10), read_response(&mut another))
        .await
        .expect("an answer within 10 s")
        .expect("a 503 before the close");
    assert_eq!(status, 503, "the WebSocket keeps its place");
    assert_eq!(t.metric(refused).await, Some(before + 1.0));
    // The admin listener has its own cap: metrics were read throughout.
    assert_eq!(
        t.metric("hubbub_limit_rejections_total{limit=\"max_connections\",listener=\"admin\"}")
            .await,
        Some(0.0)
    );
}
