//! REST authentication against a real server: what the SDKs send is accepted, everything else is
//! refused with a clear, Azure-shaped 401, and key rotation takes effect at once.

mod common;

use base64::Engine;
use common::{assert_error, sign, TestServer};
use hubbub_proto::keys::KeySlot;
use serde_json::json;

const SEND_PATH: &str = "/api/hubs/chat/:send?api-version=2024-12-01";

fn b64(text: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

#[tokio::test]
async fn health_needs_no_token() {
    let t = TestServer::start().await;
    for method in [reqwest::Method::HEAD, reqwest::Method::GET] {
        let response = t
            .http
            .request(method, t.public_url("/api/health?api-version=2024-12-01"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
}

#[tokio::test]
async fn tokens_from_either_key_are_accepted_and_counted_per_slot() {
    let t = TestServer::start().await;
    let primary = t.key(KeySlot::Primary);
    let secondary = t.key(KeySlot::Secondary);
    assert_eq!(t.send_with_key(&primary).await, 202);
    assert_eq!(t.send_with_key(&secondary).await, 202);
    assert_eq!(t.send_with_key(&secondary).await, 202);
    let keys = t.keys().await;
    assert_eq!(keys["primary"]["authenticatedRequests"], 1);
    assert_eq!(keys["secondary"]["authenticatedRequests"], 2);
    assert!(keys["secondary"]["lastUsedAt"].is_string());
}

#[tokio::test]
async fn python_style_tokens_without_iat_and_with_host_case_are_accepted() {
    let t = TestServer::start().await;
    let port = t.running().public_addr.port();
    // Python keeps the endpoint's case and orders the query its own way; no iat.
    let aud =
        format!("http://LocalHost:{port}/api/hubs/Chat/:send?excluded=a&api-version=2024-12-01");
    let token = sign(
        json!({"aud": aud, "exp": t.now() + 60}),
        &t.key(KeySlot::Primary),
    );
    let response = t
        .http
        .post(t.public_url("/api/hubs/Chat/:send?excluded=a&api-version=2024-12-01"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(r#"{"hello": "world"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
}

#[tokio::test]
async fn audience_scheme_is_ignored_and_percent_encoding_is_compared_decoded() {
    let t = TestServer::start().await;
    let port = t.running().public_addr.port();
    let key = t.key(KeySlot::Secondary);
    let path = "/api/hubs/chat/users/user%201/:send";
    let token = sign(
        json!({"aud": format!("wss://127.0.0.1:{port}{path}?api-version=2024-12-01"), "exp": t.now() + 60}),
        &key,
    );
    let response = t
        .http
        .post(t.public_url(&format!("{path}?api-version=2024-12-01")))
        .bearer_auth(token)
        .header("content-type", "text/plain")
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
}

#[tokio::test]
async fn malformed_and_wrong_tokens_are_refused_each_with_its_reason() {
    let t = TestServer::start().await;
    let key = t.key(KeySlot::Primary);
    let now = t.now();
    let aud = format!("{}{SEND_PATH}", t.endpoint());
    let other_host = SEND_PATH.to_string();
    let cases: Vec<(&str, String, &str)> = vec![
        ("garbage", "abc.def.ghi".into(), "not a JWT"),
        ("one part", "nodots".into(), "three dot-separated parts"),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(r#"{"alg":"none","typ":"JWT"}"#),
                b64(&json!({"aud": aud, "exp": now + 60}).to_string())
            ),
            "HS256",
        ),
        (
            "alg HS512",
            format!(
                "{}.{}.c2ln",
                b64(r#"{"alg":"HS512","typ":"JWT"}"#),
                b64(&json!({"aud": aud, "exp": now + 60}).to_string())
            ),
            "HS256",
        ),
        (
            "no exp",
            sign(json!({"aud": aud, "iat": now}), &key),
            "'exp'",
        ),
        (
            "expired",
            sign(json!({"aud": aud, "exp": now - 3600}), &key),
            "expired",
        ),
        (
            "not yet valid",
            sign(
                json!({"aud": aud, "exp": now + 7200, "nbf": now + 3600}),
                &key,
            ),
            "nbf",
        ),
        (
            "wrong host",
            sign(
                json!({"aud": format!("http://evil.example.com{other_host}"), "exp": now + 60}),
                &key,
            ),
            "audience host",
        ),
        (
            "wrong port",
            sign(
                json!({"aud": format!("http://localhost:1{SEND_PATH}"), "exp": now + 60}),
                &key,
            ),
            "audience host",
        ),
        (
            "wrong hub path",
            sign(
                json!({"aud": format!("{}/api/hubs/other/:send", t.endpoint()), "exp": now + 60}),
                &key,
            ),
            "audience path",
        ),
        ("no aud", sign(json!({"exp": now + 60}), &key), "no 'aud'"),
        (
            "unknown key",
            sign(
                json!({"aud": aud, "exp": now + 60}),
                "not-a-key-of-this-instance",
            ),
            "signature",
        ),
    ];
    for (name, token, reason) in cases {
        let body = assert_error(t.send_to_all("chat", &token).await, 401, "Unauthorized").await;
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(reason), "{name}: {message}");
        if token.len() > 10 {
            assert!(
                !body.to_string().contains(&token),
                "{name}: the token was echoed"
            );
        }
    }
    // Nothing above authenticated anything.
    let keys = t.keys().await;
    assert_eq!(keys["primary"]["authenticatedRequests"], 0);
}

#[tokio::test]
async fn missing_or_non_bearer_authorization_is_refused() {
    let t = TestServer::start().await;
    let response = t
        .http
        .post(t.public_url(SEND_PATH))
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers().get("www-authenticate").unwrap(),
        "Bearer"
    );
    let body = assert_error(response, 401, "Unauthorized").await;
    assert!(body["message"].as_str().unwrap().contains("Authorization"));
    let response = t
        .http
        .post(t.public_url(SEND_PATH))
        .basic_auth("user", Some("pass"))
        .send()
        .await
        .unwrap();
    let body = assert_error(response, 401, "Unauthorized").await;
    assert!(body["message"].as_str().unwrap().contains("Bearer"));
}

#[tokio::test]
async fn clock_skew_is_tolerated_up_to_the_leeway() {
    let t = TestServer::start().await;
    let key = t.key(KeySlot::Primary);
    let token = t.rest_token(&key, SEND_PATH); // expires in one hour
    t.clock.advance_secs(3600 + 299);
    assert_eq!(t.send_to_all("chat", &token).await.status(), 202);
    t.clock.advance_secs(2);
    let body = assert_error(t.send_to_all("chat", &token).await, 401, "Unauthorized").await;
    assert!(body["message"].as_str().unwrap().contains("expired"));
}

#[tokio::test]
async fn regenerating_the_primary_refuses_its_old_value_at_once_and_keeps_the_secondary() {
    let t = TestServer::start().await;
    let old_primary = t.key(KeySlot::Primary);
    let secondary = t.key(KeySlot::Secondary);
    assert_eq!(t.send_with_key(&old_primary).await, 202);
    let keys = t.regenerate("Primary").await;
    let new_primary = keys["primaryKey"].as_str().unwrap().to_string();
    assert_ne!(new_primary, old_primary);
    assert_eq!(keys["secondaryKey"], secondary.as_str());
    assert_eq!(t.send_with_key(&old_primary).await, 401);
    assert_eq!(t.send_with_key(&secondary).await, 202);
    assert_eq!(t.send_with_key(&new_primary).await, 202);
}

#[tokio::test]
async fn regenerating_the_secondary_or_the_salt_leaves_the_other_keys_working() {
    let t = TestServer::start().await;
    let primary = t.key(KeySlot::Primary);
    let old_secondary = t.key(KeySlot::Secondary);
    let keys = t.regenerate("secondary").await;
    let new_secondary = keys["secondaryKey"].as_str().unwrap().to_string();
    assert_eq!(t.send_with_key(&old_secondary).await, 401);
    assert_eq!(t.send_with_key(&new_secondary).await, 202);
    assert_eq!(t.send_with_key(&primary).await, 202);
    let before = t.keys().await;
    let after = t.regenerate("SALT").await;
    assert_eq!(after["primaryKey"], before["primaryKey"]);
    assert_eq!(after["secondaryKey"], before["secondaryKey"]);
    assert_eq!(after["salt"]["version"], 2);
    assert_eq!(t.send_with_key(&primary).await, 202);
    assert_eq!(t.send_with_key(&new_secondary).await, 202);
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let t = TestServer::start().await;
    let key = t.key(KeySlot::Primary);
    let post = |path: &str, content_type: &str, body: Vec<u8>| {
        let token = t.rest_token(&key, path);
        t.http
            .post(t.public_url(path))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let too_big = vec![b'x'; 1024 * 1024 + 1];
    assert_error(
        post(SEND_PATH, "text/plain", too_big).await.unwrap(),
        413,
        "RequestEntityTooLarge",
    )
    .await;
    let exactly_max = vec![b'x'; 1024 * 1024];
    assert_eq!(
        post(SEND_PATH, "text/plain", exactly_max)
            .await
            .unwrap()
            .status(),
        202
    );
    assert_error(
        post(SEND_PATH, "image/png", b"x".to_vec()).await.unwrap(),
        415,
        "UnsupportedMediaType",
    )
    .await;
    assert_error(
        post(SEND_PATH, "application/json", b"{not json".to_vec())
            .await
            .unwrap(),
        400,
        "InvalidJson",
    )
    .await;
    assert_eq!(
        post(
            SEND_PATH,
            "application/json; charset=utf-8",
            br#"{"a":1}"#.to_vec()
        )
        .await
        .unwrap()
        .status(),
        202
    );
    assert_eq!(
        post(SEND_PATH, "application/octet-stream", vec![0, 1, 2, 255])
            .await
            .unwrap()
            .status(),
        202
    );
    assert_error(
        post("/api/hubs/1bad/:send", "text/plain", b"x".to_vec())
            .await
            .unwrap(),
        400,
        "InvalidHubName",
    )
    .await;
    assert_error(
        post(
            "/api/hubs/chat/groups/%20%20/:send",
            "text/plain",
            b"x".to_vec(),
        )
        .await
        .unwrap(),
        400,
        "InvalidGroupName",
    )
    .await;
    let long_group = format!("/api/hubs/chat/groups/{}/:send", "g".repeat(1025));
    assert_error(
        post(&long_group, "text/plain", b"x".to_vec())
            .await
            .unwrap(),
        400,
        "InvalidGroupName",
    )
    .await;
    let response = t
        .http
        .get(t.public_url("/api/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "NotFound").await;
}

#[tokio::test]
async fn every_send_route_answers_202() {
    let t = TestServer::start().await;
    let key = t.key(KeySlot::Secondary);
    for path in [
        "/api/hubs/chat/:send?api-version=2024-12-01",
        "/api/hubs/chat/groups/g%2F1/:send?api-version=2024-12-01",
        "/api/hubs/chat/users/user%201/:send?api-version=2024-12-01",
        "/api/hubs/chat/connections/conn1/:send?api-version=2021-10-01",
    ] {
        let response = t
            .http
            .post(t.public_url(path))
            .bearer_auth(t.rest_token(&key, path))
            .header("content-type", "text/plain")
            .body("hi")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{path}");
    }
}
