//! Event handlers against a real server and a real HTTP app server that records what it gets:
//! CloudEvents headers and signatures, abuse protection, the blocking connect event, user
//! events with replies and state, disconnected reasons, rotation, and bad upstream answers.

mod common;

use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use common::app_server::{allow_origin, AppServer, Behaviour, Recorded};
use common::{next_json, send_json, TestServer};
use hubbub_proto::keys::KeySlot;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const JSON: &str = "json.webpubsub.azure.v1";

/// A typical app: connect sets the user, a group, a role and state; user events echo with a
/// counter kept in the connection state.
fn typical_app() -> Behaviour {
    Arc::new(|r: &Recorded| {
        if r.method == Method::OPTIONS {
            return allow_origin();
        }
        match r.header("ce-eventName") {
            Some("connect") => (
                StatusCode::OK,
                [("content-type", "application/json"), ("ce-connectionState", "count=0")],
                json!({"userId": "from-app", "groups": ["app-group"], "roles": ["webpubsub.sendToGroup"], "futureField": 1}).to_string(),
            )
                .into_response(),
            Some("echo") => {
                let count: u32 = r.header("ce-connectionState").and_then(|s| s.strip_prefix("count=")).and_then(|n| n.parse().ok()).unwrap_or(99);
                let content_type = r.header("content-type").unwrap_or("").to_string();
                (StatusCode::OK, [("content-type", content_type), ("ce-connectionState", format!("count={}", count + 1))], r.body.clone()).into_response()
            }
            Some("fail") => (StatusCode::INTERNAL_SERVER_ERROR, "nope").into_response(),
            _ => StatusCode::OK.into_response(),
        }
    })
}

async fn configure(t: &TestServer, hub: &str, properties: Value) {
    let response = t
        .http
        .put(t.admin_url(&format!("/admin/hubs/{hub}")))
        .bearer_auth(t.admin_token())
        .json(&properties)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
}

fn handler(app: &AppServer, system: &[&str]) -> Value {
    json!({"eventHandlers": [{"urlTemplate": format!("{}/api/{{hub}}/{{event}}", app.url), "userEventPattern": "*", "systemEvents": system}]})
}

fn hex_hmac(key: &str, message: &str) -> String {
    hubbub_proto::jwt::hmac_sha256(key.as_bytes(), message.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn connect_sets_identity_groups_roles_and_state_and_events_round_trip() {
    let app = AppServer::start(typical_app()).await;
    let t = TestServer::start().await;
    configure(
        &t,
        "chat",
        handler(&app, &["connect", "connected", "disconnected"]),
    )
    .await;
    let token = t.client_token(&t.key(KeySlot::Primary), "Chat", None, &[], &[]);
    let (mut ws, connected) = t
        .json_client("Chat", &format!("{token}&custom=1&tag=a&tag=b"), JSON)
        .await;
    assert_eq!(connected["userId"], "from-app");
    let id = connected["connectionId"].as_str().unwrap().to_string();

    let connect = &app.wait_for("connect", 1).await[0];
    assert_eq!(connect.path, "/api/chat/connect");
    for (name, value) in [
        ("ce-specversion", "1.0"),
        ("ce-awpsversion", "1.0"),
        ("ce-type", "azure.webpubsub.sys.connect"),
        ("ce-hub", "chat"),
        ("webhook-request-origin", "localhost"),
        ("content-type", "application/json; charset=utf-8"),
    ] {
        assert_eq!(connect.header(name), Some(value), "{name}");
    }
    assert_eq!(
        connect.header("ce-source"),
        Some(format!("/hubs/chat/client/{id}").as_str())
    );
    assert!(
        connect.header("ce-userid").is_none(),
        "no user yet at connect"
    );
    assert!(connect.header("ce-subprotocol").is_none());
    let body: Value = serde_json::from_slice(&connect.body).unwrap();
    assert_eq!(body["query"]["custom"], json!(["1"]));
    assert_eq!(
        body["query"]["tag"],
        json!(["a", "b"]),
        "repeated parameters are collected"
    );
    assert!(body["headers"]["sec-websocket-key"].is_array());
    assert!(
        body["query"]["access_token"][0].is_string(),
        "every query parameter, as the service sends it"
    );
    assert_eq!(body["subprotocols"], json!([JSON]));
    assert!(body["claims"]["exp"].is_array());
    let expected = format!(
        "sha256={},sha256={}",
        hex_hmac(&t.key(KeySlot::Primary), &id),
        hex_hmac(&t.key(KeySlot::Secondary), &id)
    );
    assert_eq!(connect.header("ce-signature"), Some(expected.as_str()));

    let connected_event = &app.wait_for("connected", 1).await[0];
    assert_eq!(connected_event.header("ce-userid"), Some("from-app"));
    assert_eq!(
        connected_event.header("ce-connectionstate"),
        Some("count=0")
    );
    assert_eq!(connected_event.header("ce-subprotocol"), Some(JSON));

    // The group and role from the connect response.
    let status = t
        .rest_request(
            Method::HEAD,
            &t.key(KeySlot::Primary),
            "/api/hubs/chat/groups/app-group?api-version=2024-12-01",
        )
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);

    // User events echo back as server messages, in each data type, and the state counts up.
    for (i, (data_type, data)) in [
        ("text", json!("hi")),
        ("json", json!({"a": [1]})),
        ("binary", json!("AQID")),
    ]
    .into_iter()
    .enumerate()
    {
        send_json(&mut ws, json!({"type": "event", "event": "echo", "ackId": i + 1, "dataType": data_type, "data": data})).await;
        let reply = next_json(&mut ws).await;
        assert_eq!(
            (reply["from"].as_str(), reply["dataType"].as_str()),
            (Some("server"), Some(data_type)),
            "{reply}"
        );
        assert_eq!(reply["data"], data);
        assert_eq!(next_json(&mut ws).await["success"], true);
    }
    let echoes = app.events("echo");
    let states: Vec<_> = echoes
        .iter()
        .map(|r| r.header("ce-connectionstate").unwrap_or("").to_string())
        .collect();
    assert_eq!(states, ["count=0", "count=1", "count=2"]);
    assert_eq!(
        echoes[0].header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(
        echoes[1].header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(
        echoes[2].header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(echoes[2].body.as_ref(), [1, 2, 3]);
    assert_eq!(
        echoes[0].header("ce-type"),
        Some("azure.webpubsub.user.echo")
    );

    // An error answer fails the ack; the connection stays usable.
    send_json(
        &mut ws,
        json!({"type": "event", "event": "fail", "ackId": 10, "dataType": "text", "data": "x"}),
    )
    .await;
    let failed = next_json(&mut ws).await;
    assert_eq!(failed["error"]["name"], "InvocationFailed");
    send_json(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut ws).await["type"], "pong");

    // A REST close: the app hears why.
    let path = format!("/api/hubs/chat/connections/{id}?reason=done%20here&api-version=2024-12-01");
    let response = t
        .rest_request(Method::DELETE, &t.key(KeySlot::Primary), &path)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let gone = &app.wait_for("disconnected", 1).await[0];
    assert_eq!(
        serde_json::from_slice::<Value>(&gone.body).unwrap(),
        json!({"reason": "done here"})
    );
    assert_eq!(gone.header("ce-connectionstate"), Some("count=3"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        app.events("disconnected").len(),
        1,
        "exactly one disconnected event"
    );
}

#[tokio::test]
async fn a_handler_that_refuses_the_origin_gets_no_events_and_the_failure_is_visible() {
    let app = AppServer::start(Arc::new(|r: &Recorded| {
        if r.method == Method::OPTIONS {
            return (
                StatusCode::OK,
                [("WebHook-Allowed-Origin", "someone-else.example.com")],
            )
                .into_response();
        }
        StatusCode::OK.into_response()
    }))
    .await;
    let t = TestServer::start().await;
    configure(&t, "hub", handler(&app, &["connect", "connected"])).await;
    let token = t.client_token(&t.key(KeySlot::Primary), "hub", None, &[], &[]);
    let refused = t
        .ws_connect(
            &format!("/client/hubs/hub?access_token={token}"),
            Some(JSON),
        )
        .await;
    assert_eq!(refused.err(), Some(500));
    let options = app
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.method == Method::OPTIONS)
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(options[0].path, "/api/hub/validate");
    assert_eq!(
        options[0].header("webhook-request-origin"),
        Some("localhost")
    );
    assert_eq!(options[0].header("ce-awpsversion"), Some("1.0"));
    assert!(app.posts().is_empty(), "no events after a failed handshake");
    let problems = t.admin_json("/admin/event-handlers").await;
    let reason = problems[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("abuse protection") && reason.contains("localhost"),
        "{reason}"
    );
}

#[tokio::test]
async fn connect_answers_decide_the_upgrade() {
    let cases: Vec<(&str, Behaviour, u16)> = vec![
        (
            "401 passes through",
            Arc::new(|_: &Recorded| (StatusCode::UNAUTHORIZED, "who are you").into_response()),
            401,
        ),
        (
            "not JSON",
            Arc::new(|_: &Recorded| (StatusCode::OK, "hello").into_response()),
            500,
        ),
        (
            "unoffered subprotocol",
            Arc::new(|_: &Recorded| (StatusCode::OK, r#"{"subprotocol":"mqtt"}"#).into_response()),
            500,
        ),
        (
            "5xx",
            Arc::new(|_: &Recorded| StatusCode::BAD_GATEWAY.into_response()),
            500,
        ),
        (
            "redirect",
            Arc::new(|_: &Recorded| {
                (StatusCode::FOUND, [("location", "http://127.0.0.1:9/")]).into_response()
            }),
            500,
        ),
        (
            "huge body",
            Arc::new(|_: &Recorded| (StatusCode::OK, vec![b' '; 2 * 1024 * 1024]).into_response()),
            500,
        ),
        (
            "204 accepts",
            Arc::new(|_: &Recorded| StatusCode::NO_CONTENT.into_response()),
            101,
        ),
    ];
    for (name, connect, expected) in cases {
        let app = AppServer::start(Arc::new(move |r: &Recorded| {
            if r.method == Method::OPTIONS {
                allow_origin()
            } else {
                connect(r)
            }
        }))
        .await;
        let t = TestServer::start().await;
        configure(&t, "hub", handler(&app, &["connect"])).await;
        let token = t.client_token(&t.key(KeySlot::Primary), "hub", Some("u"), &[], &[]);
        let result = t
            .ws_connect(
                &format!("/client/hubs/hub?access_token={token}"),
                Some(JSON),
            )
            .await;
        match result {
            Ok(_) => assert_eq!(expected, 101, "{name}"),
            Err(status) => assert_eq!(status, expected, "{name}"),
        }
        let path = "/api/hubs/hub/users/u?api-version=2024-12-01";
        let exists = t
            .rest_request(Method::HEAD, &t.key(KeySlot::Primary), path)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(
            exists == 200,
            expected == 101,
            "{name}: no half-open connection"
        );
    }
}

#[tokio::test]
async fn a_handler_that_never_answers_times_out() {
    let app = AppServer::start(Arc::new(|r: &Recorded| {
        if r.method == Method::OPTIONS {
            allow_origin()
        } else {
            StatusCode::OK.into_response()
        }
    }))
    .await;
    // A listener that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    drop(app);
    let t = TestServer::start_with(hubbub_server::Settings {
        event_handler_timeout_secs: Some(1),
        ..Default::default()
    })
    .await;
    configure(&t, "hub", json!({"eventHandlers": [{"urlTemplate": format!("{silent_url}/{{event}}"), "systemEvents": ["connect"]}]})).await;
    let token = t.client_token(&t.key(KeySlot::Primary), "hub", None, &[], &[]);
    let started = std::time::Instant::now();
    let result = t
        .ws_connect(
            &format!("/client/hubs/hub?access_token={token}"),
            Some(JSON),
        )
        .await;
    assert_eq!(result.err(), Some(500));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn signatures_follow_rotation_so_a_secondary_only_validator_keeps_validating() {
    let app = AppServer::start(typical_app()).await;
    let t = TestServer::start().await;
    configure(&t, "hub", handler(&app, &["connected"])).await;
    let secondary = t.key(KeySlot::Secondary);
    let validates = |key: &str, r: &Recorded| {
        let id = r.header("ce-connectionid").unwrap();
        let expected = format!("sha256={}", hex_hmac(key, id));
        r.header("ce-signature")
            .unwrap()
            .split(',')
            .any(|s| s.eq_ignore_ascii_case(&expected))
    };
    let token = t.client_token(&t.key(KeySlot::Primary), "hub", Some("u"), &[], &[]);
    let (mut ws, _) = t.json_client("hub", &token, JSON).await;
    for round in 1..=3 {
        let old_primary = t.key(KeySlot::Primary);
        t.regenerate("Primary").await;
        let new_primary = t.key(KeySlot::Primary);
        send_json(&mut ws, json!({"type": "event", "event": "echo", "ackId": round, "dataType": "text", "data": "x"})).await;
        next_json(&mut ws).await;
        next_json(&mut ws).await;
        let event = app.events("echo").pop().unwrap();
        assert!(
            validates(&secondary, &event),
            "secondary-only validator, round {round}"
        );
        assert!(
            validates(&new_primary, &event),
            "new primary validates at once"
        );
        assert!(
            !validates(&old_primary, &event),
            "old primary no longer validates"
        );
    }
    assert!(app
        .events("connected")
        .iter()
        .all(|r| validates(&secondary, r)));
}

#[tokio::test]
async fn anonymous_connections_follow_the_hub_policy() {
    let t = TestServer::start().await;
    assert_eq!(
        t.ws_connect("/client/hubs/open", Some(JSON)).await.err(),
        Some(401)
    );
    configure(&t, "open", json!({"anonymousConnectPolicy": "allow"})).await;
    let (mut ws, _) = t
        .ws_connect("/client/hubs/open", Some(JSON))
        .await
        .expect("anonymous allowed");
    let connected = next_json(&mut ws).await;
    assert_eq!(connected["userId"], Value::Null);
    // Settings persist across a restart.
    let t = t.restart().await;
    assert!(t.ws_connect("/client/hubs/open", Some(JSON)).await.is_ok());
    let shown = t.admin_json("/admin/hubs/open").await;
    assert_eq!(shown["properties"]["anonymousConnectPolicy"], "allow");
}

#[tokio::test]
async fn simple_clients_send_message_events_and_get_raw_replies() {
    let app = AppServer::start(Arc::new(|r: &Recorded| {
        if r.method == Method::OPTIONS {
            return allow_origin();
        }
        match r.header("ce-eventName") {
            Some("message") => (
                StatusCode::OK,
                [("content-type", "text/plain")],
                format!("got {}", String::from_utf8_lossy(&r.body)),
            )
                .into_response(),
            _ => StatusCode::OK.into_response(),
        }
    }))
    .await;
    let t = TestServer::start().await;
    configure(&t, "hub", handler(&app, &[])).await;
    let token = t.client_token(&t.key(KeySlot::Primary), "hub", Some("s"), &[], &[]);
    let (mut ws, _) = t
        .ws_connect(&format!("/client/hubs/hub?access_token={token}"), None)
        .await
        .unwrap();
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        "hello".into(),
    ))
    .await
    .unwrap();
    match common::next_frame(&mut ws).await {
        Some(tokio_tungstenite::tungstenite::Message::Text(text)) => {
            assert_eq!(text.as_str(), "got hello")
        }
        other => panic!("expected the app's reply, got {other:?}"),
    }
    let message = &app.wait_for("message", 1).await[0];
    assert_eq!(
        message.header("ce-type"),
        Some("azure.webpubsub.user.message")
    );
    assert_eq!(
        message.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(message.header("ce-userid"), Some("s"));
    assert!(message.header("ce-subprotocol").is_none());
}

#[tokio::test]
async fn connected_events_are_retried_when_the_app_fails() {
    let failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&failures);
    let app = AppServer::start(Arc::new(move |r: &Recorded| {
        if r.method == Method::OPTIONS {
            return allow_origin();
        }
        if r.header("ce-eventName") == Some("connected")
            && counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0
        {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        StatusCode::OK.into_response()
    }))
    .await;
    let t = TestServer::start().await;
    configure(&t, "hub", handler(&app, &["connected"])).await;
    let token = t.client_token(&t.key(KeySlot::Primary), "hub", None, &[], &[]);
    let (_ws, _) = t.json_client("hub", &token, JSON).await;
    let attempts = app.wait_for("connected", 2).await;
    assert_eq!(
        attempts[0].header("ce-id"),
        attempts[1].header("ce-id"),
        "a retry keeps its event id"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        app.events("connected").len(),
        2,
        "no more attempts after a success"
    );
}

#[tokio::test]
async fn mqtt_user_events_carry_user_properties_as_mqtt_headers_both_ways() {
    use futures_util::SinkExt;
    use hubbub_proto::mqtt::{self as wire, Packet};
    use tokio_tungstenite::tungstenite::Message;
    let app = AppServer::start(Arc::new(|r: &Recorded| {
        if r.method == Method::OPTIONS {
            return allow_origin();
        }
        (
            StatusCode::OK,
            [("content-type", "text/plain"), ("mqtt-answer", "yes")],
            "pong",
        )
            .into_response()
    }))
    .await;
    let t = TestServer::start().await;
    configure(&t, "chat", handler(&app, &[])).await;
    let now = t.now();
    let token = common::sign(
        json!({"aud": format!("{}/clients/mqtt/hubs/chat", t.endpoint()), "iat": now, "exp": now + 600}),
        &t.key(KeySlot::Primary),
    );
    let (mut ws, _) = t
        .ws_connect(
            &format!("/clients/mqtt/hubs/chat?access_token={token}"),
            Some("mqtt"),
        )
        .await
        .expect("upgrade");
    let connect = [
        0x10, 16, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0, 0, 3, b'e', b'v', b'1',
    ];
    ws.send(Message::Binary(connect.to_vec().into()))
        .await
        .unwrap();
    let mut framer = wire::Framer::new(1 << 20);
    let mut next_packet = async |ws: &mut common::Ws| loop {
        let Some(Message::Binary(bytes)) = common::next_frame(ws).await else {
            panic!("an MQTT packet");
        };
        if let Some(packet) = framer.push(&bytes, wire::V5).unwrap().pop() {
            return packet;
        }
    };
    assert!(matches!(next_packet(&mut ws).await, Packet::ConnAck(_)));
    // PUBLISH (QoS 0) to the events topic with user property trace=t1.
    let topic = b"$webpubsub/server/events/echo";
    let properties = [0x26, 0, 5, b't', b'r', b'a', b'c', b'e', 0, 2, b't', b'1'];
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(topic);
    body.push(properties.len() as u8);
    body.extend_from_slice(&properties);
    body.extend_from_slice(b"ping");
    let mut publish = vec![0x30, body.len() as u8];
    publish.extend(body);
    ws.send(Message::Binary(publish.into())).await.unwrap();

    let seen = app.wait_for("echo", 1).await;
    assert_eq!(
        seen[0].header("mqtt-trace"),
        Some("t1"),
        "{:?}",
        seen[0].headers
    );
    assert!(seen[0].header("x-webpubsub-metadata-trace").is_none());
    assert_eq!(seen[0].header("ce-subprotocol"), Some("mqtt"));
    assert!(seen[0]
        .header("ce-sessionId")
        .is_some_and(|s| !s.is_empty()));
    let Packet::Publish(answer) = next_packet(&mut ws).await else {
        panic!("the answer");
    };
    assert_eq!(answer.topic_name, "$webpubsub/server/events/echo/succeeded");
    assert_eq!(&answer.payload[..], b"pong");
    assert_eq!(
        wire::user_properties(&answer.properties),
        [
            ("answer".to_string(), "yes".to_string()),
            ("azure-status-code".to_string(), "200".to_string())
        ]
    );
}
