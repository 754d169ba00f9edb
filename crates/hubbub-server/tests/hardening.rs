//! What a stranger's client cannot do: event names that would grow memory and logs or change a
//! handler's URL path are refused at the edge; a failing handler is one problem, whatever the
//! events; other connections keep working meanwhile.

mod common;

use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use common::app_server::{allow_origin, AppServer, Recorded};
use common::{next_json, send_json, TestServer};
use hubbub_proto::keys::KeySlot;
use serde_json::json;
use std::sync::Arc;

const JSON: &str = "json.webpubsub.azure.v1";

#[tokio::test]
async fn event_names_are_checked_at_the_edge_and_cannot_change_the_handler_url() {
    // The app answers `ok` events and fails every other one.
    let app = AppServer::start(Arc::new(|r: &Recorded| {
        if r.method == Method::OPTIONS {
            return allow_origin();
        }
        match r.header("ce-eventName") {
            Some("ok") | Some("a/b") => StatusCode::OK.into_response(),
            _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    }))
    .await;
    let t = TestServer::start().await;
    // The pattern of Azure's samples: `{event}` in the URL, every user event.
    let settings = json!({"eventHandlers": [{"urlTemplate": format!("{}/api/{{hub}}/{{event}}", app.url), "userEventPattern": "*"}]});
    let put = t
        .http
        .put(t.admin_url("/admin/hubs/hub"))
        .bearer_auth(t.admin_token())
        .json(&settings)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let key = t.key(KeySlot::Primary);
    let token = t.client_token(&key, "hub", None, &[], &[]);
    let (mut attacker, _) = t.json_client("hub", &token, JSON).await;
    let (mut bystander, _) = t.json_client("hub", &token, JSON).await;

    // A control character and 300,000 `é`: refused with an ack error; nothing goes upstream.
    let huge = format!("\u{1}{}", "é".repeat(300_000));
    for (ack_id, name) in [(1, huge.as_str()), (2, ".."), (3, "."), (4, "with space")] {
        send_json(
            &mut attacker,
            json!({"type": "event", "event": name, "ackId": ack_id, "dataType": "text", "data": "x"}),
        )
        .await;
        let ack = next_json(&mut attacker).await;
        assert_eq!(
            (
                ack["ackId"].as_u64(),
                ack["success"].as_bool(),
                ack["error"]["name"].as_str()
            ),
            (Some(ack_id), Some(false), Some("BadRequest")),
            "{ack}"
        );
        assert!(
            ack.to_string().len() < 1024,
            "the error does not echo the name"
        );
    }
    // An invocation with a bad name gets an error answer too.
    send_json(
        &mut attacker,
        json!({"type": "invoke", "invocationId": "i1", "event": "..", "dataType": "text", "data": "x"}),
    )
    .await;
    let answer = next_json(&mut attacker).await;
    assert_eq!(
        (answer["type"].as_str(), answer["error"]["name"].as_str()),
        (Some("invokeResponse"), Some("BadRequest"))
    );

    // A name with a `/` stays one path segment of the URL the app server agreed to.
    send_json(
        &mut attacker,
        json!({"type": "event", "event": "a/b", "ackId": 5, "dataType": "text", "data": "x"}),
    )
    .await;
    assert_eq!(next_json(&mut attacker).await["success"], true);
    let posts = app.posts();
    assert_eq!(posts.len(), 1, "only the valid event went upstream");
    assert_eq!(posts[0].path, "/api/hub/a%2Fb");

    // Many failing events with different names: one problem for the handler, bounded in size.
    for n in 0..50 {
        send_json(
            &mut attacker,
            json!({"type": "event", "event": format!("fail-{n}-{}", "x".repeat(100)), "ackId": 100 + n, "dataType": "text", "data": "x"}),
        )
        .await;
        let ack = next_json(&mut attacker).await;
        assert_eq!(ack["success"], false);
    }
    let problems = t.admin_json("/admin/event-handlers").await;
    let problems = problems.as_array().expect("a list of problems");
    assert_eq!(problems.len(), 1, "one per hub and handler: {problems:?}");
    assert!(problems[0].to_string().len() < 2048);

    // The other connection was never affected.
    send_json(
        &mut attacker,
        json!({"type": "event", "event": "ok", "ackId": 999, "dataType": "text", "data": "x"}),
    )
    .await;
    assert_eq!(next_json(&mut attacker).await["success"], true);
    let sent = t
        .send_to_all(
            "hub",
            &t.rest_token(&key, "/api/hubs/hub/:send?api-version=2024-12-01"),
        )
        .await;
    assert_eq!(sent.status(), 202);
    assert_eq!(next_json(&mut bystander).await["type"], "message");
}

#[tokio::test]
async fn portal_sign_in_is_rate_limited_per_address() {
    let t = TestServer::start().await;
    let client = |from: [u8; 4]| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(from))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    };
    let sign_in = |client: reqwest::Client, token: String| {
        let url = t.admin_url("/portal/login");
        async move {
            client
                .post(url)
                .form(&[("token", token)])
                .send()
                .await
                .unwrap()
        }
    };
    let guesser = client([127, 0, 0, 1]);
    for _ in 0..5 {
        let wrong = sign_in(guesser.clone(), "not-the-token".into()).await;
        assert_eq!(wrong.status(), 401);
    }
    // The sixth try in the minute is refused, even with the right token.
    let refused = sign_in(guesser.clone(), t.admin_token()).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    // Another address signs in as usual.
    let other = sign_in(client([127, 0, 0, 2]), t.admin_token()).await;
    assert_eq!(other.status(), 303, "{:?}", other.headers());
    assert!(other.headers().contains_key("set-cookie"));
}

#[tokio::test]
async fn a_connection_joins_at_most_its_group_limit_and_others_are_unaffected() {
    let t = TestServer::start_with(hubbub_server::Settings {
        max_groups_per_connection: Some(3),
        ..Default::default()
    })
    .await;
    let key = t.key(KeySlot::Primary);
    let roles = ["webpubsub.joinLeaveGroup"];
    let token = t.client_token(&key, "hub", None, &roles, &[]);
    let (mut greedy, connected) = t.json_client("hub", &token, JSON).await;
    let (mut other, _) = t.json_client("hub", &token, JSON).await;
    let id = connected["connectionId"].as_str().unwrap().to_string();
    for n in 1..=4u64 {
        send_json(
            &mut greedy,
            json!({"type": "joinGroup", "group": format!("g{n}"), "ackId": n}),
        )
        .await;
        let ack = next_json(&mut greedy).await;
        if n <= 3 {
            assert_eq!(ack["success"], true, "{ack}");
        } else {
            assert_eq!(
                (ack["success"].as_bool(), ack["error"]["name"].as_str()),
                (Some(false), Some("BadRequest")),
                "{ack}"
            );
        }
    }
    // Over REST too: a clear 400, nothing joined.
    let path = format!("/api/hubs/hub/groups/g9/connections/{id}?api-version=2024-12-01");
    let refused = t
        .rest_request(reqwest::Method::PUT, &key, &path)
        .send()
        .await
        .unwrap();
    common::assert_error(refused, 400, "TooManyGroups").await;
    // Another connection joins as usual.
    send_json(
        &mut other,
        json!({"type": "joinGroup", "group": "g4", "ackId": 1}),
    )
    .await;
    assert_eq!(next_json(&mut other).await["success"], true);
    let metrics = t.admin_text("/metrics").await;
    assert!(
        metrics.contains(
            "hubbub_limit_rejections_total{limit=\"groups_per_connection\",listener=\"public\"} 2"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_user_opens_at_most_its_connection_limit_and_others_are_unaffected() {
    let t = TestServer::start_with(hubbub_server::Settings {
        max_connections_per_user: Some(2),
        ..Default::default()
    })
    .await;
    let key = t.key(KeySlot::Primary);
    let url = |user: &str| {
        format!(
            "/client/hubs/hub?access_token={}",
            t.client_token(&key, "hub", Some(user), &[], &[])
        )
    };
    let first = t.ws_connect(&url("u"), Some(JSON)).await.expect("first");
    let _second = t.ws_connect(&url("u"), Some(JSON)).await.expect("second");
    assert_eq!(
        t.ws_connect(&url("u"), Some(JSON)).await.err(),
        Some(429),
        "the third connection of the user is refused"
    );
    let _other_user = t
        .ws_connect(&url("v"), Some(JSON))
        .await
        .expect("another user");
    // A connection closed makes room again.
    drop(first);
    assert!(
        common::eventually(std::time::Duration::from_secs(10), || async {
            t.ws_connect(&url("u"), Some(JSON)).await.is_ok()
        })
        .await
    );
    let metrics = t.admin_text("/metrics").await;
    assert!(
        metrics.contains(
            "hubbub_limit_rejections_total{limit=\"connections_per_user\",listener=\"public\"} "
        ) && !metrics.contains("connections_per_user\",listener=\"public\"} 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn events_beyond_a_connections_queue_are_refused_and_others_keep_sending() {
    // A handler that accepts and never answers: every event waits for it.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let t = TestServer::start_with(hubbub_server::Settings {
        event_queue_per_connection: Some(2),
        ..Default::default()
    })
    .await;
    let settings = json!({"eventHandlers": [{"urlTemplate": format!("{silent_url}/{{event}}"), "userEventPattern": "*"}]});
    let put = t
        .http
        .put(t.admin_url("/admin/hubs/hub"))
        .bearer_auth(t.admin_token())
        .json(&settings)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let key = t.key(KeySlot::Primary);
    let token = t.client_token(&key, "hub", None, &[], &[]);
    let (mut busy, _) = t.json_client("hub", &token, JSON).await;
    let (mut other, _) = t.json_client("hub", &token, JSON).await;
    // One in flight, two queued: the fourth is refused at once with a clear ack.
    for n in 1..=4u64 {
        send_json(
            &mut busy,
            json!({"type": "event", "event": "e", "ackId": n, "dataType": "text", "data": "x"}),
        )
        .await;
    }
    let ack = next_json(&mut busy).await;
    assert_eq!(
        (ack["ackId"].as_u64(), ack["success"].as_bool()),
        (Some(4), Some(false)),
        "{ack}"
    );
    assert_eq!(ack["error"]["name"], "InvocationFailed", "{ack}");
    // Another connection's events are queued as usual (its own queue), not refused.
    send_json(
        &mut other,
        json!({"type": "event", "event": "e", "ackId": 1, "dataType": "text", "data": "x"}),
    )
    .await;
    assert!(common::silent_for(&mut other, std::time::Duration::from_millis(500)).await);
    assert_eq!(
        t.metric("hubbub_limit_rejections_total{limit=\"event_queue\",listener=\"public\"}")
            .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn a_reliable_client_that_never_acknowledges_is_closed_at_its_buffer_limit() {
    use tokio_tungstenite::tungstenite::Message;
    let t = TestServer::start_with(hubbub_server::Settings {
        reliable_buffer_messages: Some(5),
        ..Default::default()
    })
    .await;
    let key = t.key(KeySlot::Primary);
    let token = t.client_token(&key, "hub", None, &[], &[]);
    let (mut hoarder, _) = t
        .json_client("hub", &token, "json.reliable.webpubsub.azure.v1")
        .await;
    let (mut other, _) = t.json_client("hub", &token, JSON).await;
    let rest = t.rest_token(&key, "/api/hubs/hub/:send");
    for _ in 0..6 {
        assert_eq!(t.send_to_all("hub", &rest).await.status(), 202);
    }
    // Five sequenced messages, then a 1008 `SlowClient` close: its buffer would hold a sixth.
    let mut sequenced = 0;
    let close = loop {
        match common::next_frame(&mut hoarder).await {
            Some(Message::Text(text)) => {
                let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
                if frame["type"] == "message" {
                    sequenced += 1;
                }
            }
            Some(Message::Close(frame)) => break frame,
            other => panic!("unexpected {other:?}"),
        }
    };
    let close = close.expect("a close frame");
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (1008, "SlowClient")
    );
    assert!(sequenced <= 5, "no more than the buffer holds: {sequenced}");
    // The other client got all six.
    for _ in 0..6 {
        assert_eq!(next_json(&mut other).await["type"], "message");
    }
    assert_eq!(
        t.metric("hubbub_limit_rejections_total{limit=\"reliable_buffer\",listener=\"public\"}")
            .await,
        Some(1.0)
    );
}
