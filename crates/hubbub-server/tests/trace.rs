//! The live trace (`GET /admin/trace`): a listener sees a connection open and close with its
//! code and reason, REST calls and refused tokens, filtered as asked, and never a token or a
//! payload.

mod common;

use common::{next_json, TestServer};
use hubbub_proto::keys::KeySlot;
use serde_json::Value;
use std::time::Duration;

const JSON: &str = "json.webpubsub.azure.v1";

/// Reads SSE `data:` lines until `wanted` events arrived (or 10 s passed).
async fn events(response: &mut reqwest::Response, wanted: usize, raw: &mut String) -> Vec<Value> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while events.len() < wanted {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("only {} events: {raw}", events.len()))
            .expect("the stream")
            .expect("not ended");
        raw.push_str(&String::from_utf8_lossy(&chunk));
        events = raw
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| serde_json::from_str(d.trim()).expect("JSON data"))
            .collect();
    }
    events
}

async fn listen(t: &TestServer, query: &str) -> reqwest::Response {
    let response = t
        .http
        .get(t.admin_url(&format!("/admin/trace{query}")))
        .bearer_auth(t.admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    response
}

#[tokio::test]
async fn a_connection_a_rest_close_and_a_refused_token_as_they_happen() {
    let t = TestServer::start().await;
    let unauthenticated = t
        .http
        .get(t.admin_url("/admin/trace"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    let mut all = listen(&t, "?hub=chat").await;
    let mut rest_only = listen(&t, "?category=rest").await;

    let token = t.client_token(&t.key(KeySlot::Secondary), "chat", Some("ann"), &[], &[]);
    let (mut ws, connected) = t.json_client("chat", &token, JSON).await;
    let id = connected["connectionId"].as_str().unwrap().to_string();
    let close = t
        .rest_request(
            reqwest::Method::DELETE,
            &t.key(KeySlot::Primary),
            &format!("/api/hubs/chat/connections/{id}?reason=maintenance&api-version=2024-12-01"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(close.status(), 204);
    let request_id = close.headers()["x-ms-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(next_json(&mut ws).await["message"], "maintenance");
    let bad = format!("{token}x");
    let refused = t
        .ws_connect(&format!("/client/hubs/chat?access_token={bad}"), Some(JSON))
        .await;
    assert_eq!(refused.err(), Some(401));

    let mut raw = String::new();
    let seen = events(&mut all, 4, &mut raw).await;
    let kinds: Vec<&str> = seen.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        // The REST call's event comes when the call is answered, after the close it made.
        [
            "connectionOpened",
            "connectionClosed",
            "rest",
            "authFailure"
        ],
        "{raw}"
    );
    let opened = &seen[0];
    assert_eq!(
        (
            &opened["connectionId"],
            &opened["userId"],
            &opened["protocol"],
            &opened["keySlot"]
        ),
        (
            &Value::from(id.clone()),
            &Value::from("ann"),
            &Value::from(JSON),
            &Value::from("secondary")
        )
    );
    assert_eq!(seen[2]["requestId"], request_id.as_str());
    assert_eq!(seen[2]["status"], 204);
    assert_eq!(
        seen[2]["caller"], "primary",
        "the key that authenticated the call"
    );
    let closed = &seen[1];
    assert_eq!(
        (
            &closed["by"],
            &closed["code"],
            &closed["reason"],
            &closed["cause"]
        ),
        (
            &Value::from("server"),
            &Value::from(1000),
            &Value::from("maintenance"),
            &Value::from("rest_close")
        ),
        "{closed}"
    );
    assert_eq!(
        (&seen[3]["kind"], &seen[3]["reason"]),
        (&Value::from("connection"), &Value::from("bad_signature"))
    );
    assert!(seen
        .iter()
        .all(|e| e["time"].is_string() && e["category"].is_string()));
    assert!(!raw.contains(&token[20..]), "no token in the trace");

    let mut raw_rest = String::new();
    let rest = events(&mut rest_only, 1, &mut raw_rest).await;
    assert_eq!(rest[0]["event"], "rest", "only REST calls: {raw_rest}");
    assert!(!raw_rest.contains("connectionOpened"));
}

#[tokio::test]
async fn messages_with_their_fan_out_and_event_handler_calls_but_never_a_payload() {
    use axum::response::IntoResponse;
    use common::app_server::{allow_origin, AppServer, Recorded};
    let app = AppServer::start(std::sync::Arc::new(|r: &Recorded| {
        if r.method == axum::http::Method::OPTIONS {
            return allow_origin();
        }
        axum::http::StatusCode::OK.into_response()
    }))
    .await;
    let t = TestServer::start().await;
    let settings = serde_json::json!({"eventHandlers": [{
        "urlTemplate": format!("{}/api/{{hub}}/{{event}}", app.url),
        "userEventPattern": "*",
        "systemEvents": ["connect"],
    }]});
    let response = t
        .http
        .put(t.admin_url("/admin/hubs/chat"))
        .bearer_auth(t.admin_token())
        .json(&settings)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut listener = listen(&t, "?hub=chat").await;
    let token = t.client_token(&t.key(KeySlot::Primary), "chat", Some("bo"), &[], &[]);
    let (mut ws, connected) = t.json_client("chat", &token, JSON).await;
    let id = connected["connectionId"].as_str().unwrap().to_string();
    let secret_payload = "s3cret-payload-text";
    let sent = t
        .rest_request(
            reqwest::Method::POST,
            &t.key(KeySlot::Primary),
            "/api/hubs/chat/:send?api-version=2024-12-01",
        )
        .header("content-type", "text/plain")
        .body(secret_payload)
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
    assert_eq!(next_json(&mut ws).await["data"], secret_payload);

    let mut raw = String::new();
    let seen = events(&mut listener, 4, &mut raw).await;
    let kinds: Vec<&str> = seen.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["eventHandler", "connectionOpened", "message", "rest"],
        "{raw}"
    );
    let call = &seen[0];
    assert_eq!(
        (&call["name"], &call["status"], &call["connectionId"]),
        (
            &Value::from("connect"),
            &Value::from(200),
            &Value::from(id.clone())
        ),
        "{call}"
    );
    assert!(call["ms"].as_f64().is_some() && call["error"].is_null());
    let message = &seen[2];
    assert_eq!(
        (
            &message["target"],
            &message["dataType"],
            &message["bytes"],
            &message["deliveredHere"]
        ),
        (
            &Value::from("all"),
            &Value::from("text"),
            &Value::from(secret_payload.len()),
            &Value::from(1)
        ),
        "{message}"
    );
    assert!(!raw.contains(secret_payload), "no payload in the trace");
    assert!(
        !raw.contains(app.url.as_str()),
        "no handler URL in the trace"
    );
}

#[tokio::test]
async fn payloads_only_for_a_listener_that_asked_for_one_hub_and_the_ask_is_audited() {
    let t = TestServer::start().await;
    let everywhere = t
        .http
        .get(t.admin_url("/admin/trace?payloads=true"))
        .bearer_auth(t.admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(everywhere.status(), 400, "payload capture needs one hub");
    let mut capturing = listen(&t, "?hub=Chat&payloads=true&category=message").await;
    let mut plain = listen(&t, "?hub=chat&category=message").await;
    let audit = t.admin_json("/admin/audit").await;
    let captures: Vec<&Value> = audit["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "trace_payload_capture")
        .collect();
    assert_eq!(captures.len(), 1, "{audit}");
    assert_eq!(
        (&captures[0]["detail"], &captures[0]["actor"]),
        (&Value::from("hub chat"), &Value::from("admin-token"))
    );

    let key = t.key(KeySlot::Primary);
    let long = "x".repeat(hubbub_server::trace::MAX_CAPTURED_BYTES + 10);
    for (hub, body) in [
        ("other", "not this hub"),
        ("chat", "visible"),
        ("chat", &long),
    ] {
        let path = format!("/api/hubs/{hub}/:send?api-version=2024-12-01");
        let sent = t
            .rest_request(reqwest::Method::POST, &key, &path)
            .header("content-type", "text/plain")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(sent.status(), 202);
    }
    let mut raw = String::new();
    let seen = events(&mut capturing, 2, &mut raw).await;
    assert_eq!(
        (&seen[0]["data"], &seen[0]["dataTruncated"]),
        (&Value::from("visible"), &Value::from(false))
    );
    assert_eq!(
        seen[1]["data"].as_str().map(str::len),
        Some(hubbub_server::trace::MAX_CAPTURED_BYTES)
    );
    assert_eq!(seen[1]["dataTruncated"], true);
    assert!(!raw.contains("not this hub"));
    let mut raw_plain = String::new();
    let plain_seen = events(&mut plain, 2, &mut raw_plain).await;
    assert!(
        plain_seen.iter().all(|e| e.get("data").is_none()),
        "{raw_plain}"
    );
    assert!(!raw_plain.contains("visible"));
}
