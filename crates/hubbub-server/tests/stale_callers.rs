//! Stale callers: a token signed with a key value that was regenerated is refused with a message
//! that names the key, its version and when it was regenerated; each such caller is listed (key,
//! version, kind, hub, source, user agent, count, first and last seen), counted in `/metrics`,
//! kept across a restart, and forgotten with the value when the recognition window ends.

mod common;

use common::{eventually, TestServer};
use hubbub_proto::keys::KeySlot;
use hubbub_server::Settings;
use std::time::Duration;

fn stale(list: &serde_json::Value) -> Vec<serde_json::Value> {
    list["value"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn an_old_key_is_refused_with_its_version_and_its_callers_are_listed() {
    let t = TestServer::start_with(Settings {
        stale_key_window_days: Some(30),
        maintenance_interval_ms: Some(50),
        ..Default::default()
    })
    .await;
    let old = t.key(KeySlot::Primary);
    t.regenerate("Primary").await;
    let new = t.key(KeySlot::Primary);

    // A REST call with the old key: 401, saying which key, which version, and what to do.
    let path = "/api/hubs/Chat/:send?api-version=2024-12-01";
    let response = t
        .http
        .post(t.public_url(path))
        .bearer_auth(t.rest_token(&old, path))
        .header("user-agent", "azsdk-js-web-pubsub/1.2.0")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    let message = body["message"].as_str().unwrap_or_default().to_string();
    assert!(
        message.contains("primary key version 1")
            && message.contains("regenerated at 20")
            && message.contains("connection string"),
        "{body}"
    );
    assert!(!message.contains(&old), "never the key itself");
    // A client connection with a token the old key signed: refused too.
    let token = t.client_token(&old, "chat", Some("u"), &[], &[]);
    let refused = t
        .ws_connect(&format!("/client/hubs/chat?access_token={token}"), None)
        .await;
    assert_eq!(refused.err(), Some(401));
    // The new key works, and a key that was never ours is a plain bad signature, not listed.
    assert_eq!(t.send_with_key(&new).await, 202);
    let stranger = "c3RyYW5nZXItc3RyYW5nZXItc3RyYW5nZXItc3RyYW5nZXI=";
    assert_eq!(t.send_with_key(stranger).await, 401);

    let list = stale(&t.admin_json("/admin/keys/stale-callers").await);
    assert_eq!(list.len(), 2, "{list:?}");
    let rest = list
        .iter()
        .find(|c| c["kind"] == "rest")
        .expect("the REST caller");
    assert_eq!(rest["keyType"], "primary");
    assert_eq!(rest["version"], 1);
    assert_eq!(rest["hub"], "Chat");
    assert_eq!(rest["sourceAddress"], "127.0.0.1");
    assert_eq!(rest["userAgent"], "azsdk-js-web-pubsub/1.2.0");
    assert_eq!(rest["count"], 1);
    assert!(rest["firstSeenAt"].as_str().unwrap().ends_with('Z'));
    let connection = list
        .iter()
        .find(|c| c["kind"] == "connection")
        .expect("the client connection");
    assert_eq!(connection["hub"], "chat");
    assert_eq!(
        t.metric("hubbub_key_stale_authentications_total{slot=\"primary\"}")
            .await,
        Some(2.0)
    );

    // Kept across a restart.
    let t = t.restart().await;
    let kept = stale(&t.admin_json("/admin/keys/stale-callers").await);
    assert_eq!(kept.len(), 2, "{kept:?}");

    // When the recognition window ends, the old value is forgotten: a plain bad signature, and
    // its callers are no longer listed.
    t.clock.advance_secs(31 * 24 * 3600);
    assert!(
        eventually(Duration::from_secs(10), || async {
            stale(&t.admin_json("/admin/keys/stale-callers").await).is_empty()
        })
        .await,
        "forgotten after the window"
    );
    let response = t
        .http
        .post(t.public_url(path))
        .bearer_auth(t.rest_token(&old, path))
        .body("x")
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        !body["message"].as_str().unwrap().contains("regenerated"),
        "{body}"
    );
}

#[tokio::test]
async fn a_value_in_its_grace_period_still_works_and_only_earlier_ones_are_stale() {
    let t = TestServer::start().await;
    let first = t.key(KeySlot::Secondary);
    let response = t
        .admin_post(
            "/admin/keys/regenerate",
            serde_json::json!({"keyType": "Secondary", "grace": "1h"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let second = t.key(KeySlot::Secondary);
    t.regenerate("Secondary").await;
    // Regenerating without grace ended the first value's grace: now it is stale (version 1);
    // the second value (version 2) is stale too.
    for (key, version) in [(&first, 1), (&second, 2)] {
        let path = "/api/hubs/hub/:send?api-version=2024-12-01";
        let response = t
            .http
            .post(t.public_url(path))
            .bearer_auth(t.rest_token(key, path))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains(&format!("secondary key version {version},")),
            "{body}"
        );
    }
}
