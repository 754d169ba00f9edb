//! Key events as CloudEvents: a regeneration, a revocation, a required rotation, a rotation step
//! and the first stale caller of a key version reach a CloudEvents consumer once each, as
//! structured-mode CloudEvents 1.0, signed with the webhook secret; email and the plain webhook
//! keep getting only the notices they got before.

mod common;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use common::app_server::{AppServer, Recorded};
use common::{eventually, TestServer};
use hubbub_proto::keys::KeySlot;
use hubbub_server::Settings;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const SECRET: &str = "a-webhook-secret-of-some-length";

fn events(consumer: &AppServer) -> Vec<(Recorded, Value)> {
    consumer
        .posts()
        .into_iter()
        .filter(|r| r.path == "/events")
        .map(|r| {
            let body = serde_json::from_slice(&r.body).expect("JSON");
            (r, body)
        })
        .collect()
}

fn of_type<'a>(all: &'a [(Recorded, Value)], kind: &str) -> Vec<&'a (Recorded, Value)> {
    all.iter().filter(|(_, e)| e["type"] == kind).collect()
}

#[tokio::test]
async fn key_events_reach_a_cloudevents_consumer_signed_and_once() {
    let consumer = AppServer::start(Arc::new(|_: &Recorded| StatusCode::OK.into_response())).await;
    let t = TestServer::start_with(Settings {
        maintenance_interval_ms: Some(20),
        notifications: Some(hubbub_server::keys::notices::NotificationSettings {
            webhook_url: Some(format!("{}/hooks", consumer.url)),
            cloudevents_url: Some(format!("{}/events", consumer.url)),
            webhook_secret: Some(SECRET.into()),
            ..Default::default()
        }),
        ..Settings::default()
    })
    .await;
    // Let the first pass set where the key events start.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let old = t.key(KeySlot::Primary);
    t.regenerate("Primary").await;
    assert_eq!(t.send_with_key(&old).await, 401, "a stale caller");
    let response = t
        .admin_post(
            "/admin/keys/require-rotation",
            json!({"keyType": "Secondary", "by": "3d", "reason": "offboarding"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    // (A required rotation is a notice while it stands: revoking the key ends it.)
    assert!(
        eventually(Duration::from_secs(10), || async {
            !of_type(&events(&consumer), "Hubbub.Keys.RotationRequired").is_empty()
        })
        .await
    );
    let response = t
        .admin_post("/admin/keys/revoke", json!({"keyType": "Secondary"}))
        .await;
    assert_eq!(response.status(), 200);

    let wanted = [
        "Hubbub.Keys.KeyRegenerated",
        "Hubbub.Keys.StaleCallerDetected",
        "Hubbub.Keys.RotationRequired",
        "Hubbub.Keys.KeyRevoked",
    ];
    assert!(
        eventually(Duration::from_secs(10), || async {
            let all = events(&consumer);
            wanted.iter().all(|w| !of_type(&all, w).is_empty())
        })
        .await,
        "{:?}",
        events(&consumer)
            .iter()
            .map(|(_, e)| e["type"].clone())
            .collect::<Vec<_>>()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all = events(&consumer);
    for wanted in wanted {
        assert_eq!(of_type(&all, wanted).len(), 1, "{wanted} once");
    }
    let (request, regenerated) = of_type(&all, "Hubbub.Keys.KeyRegenerated")[0];
    assert_eq!(regenerated["specversion"], "1.0");
    assert_eq!(regenerated["subject"], "primary");
    assert_eq!(regenerated["datacontenttype"], "application/json");
    assert!(regenerated["source"].as_str().unwrap().ends_with("/keys"));
    assert!(regenerated["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(regenerated["data"]["objectType"], "AccessKey");
    assert_eq!(regenerated["data"]["keyType"], "primary");
    assert_eq!(regenerated["data"]["version"], 2);
    assert_eq!(regenerated["data"]["previousVersion"], 1);
    assert!(request
        .header("content-type")
        .unwrap()
        .starts_with("application/cloudevents+json"));
    // The signature covers the timestamp and the body, with the webhook secret.
    let timestamp: i64 = request
        .header("x-hubbub-timestamp")
        .unwrap()
        .parse()
        .unwrap();
    let expected = hubbub_server::keys::notices::webhook_signature(
        SECRET,
        timestamp,
        std::str::from_utf8(&request.body).unwrap(),
    );
    assert_eq!(
        request.header("x-hubbub-signature"),
        Some(expected.as_str())
    );
    let (_, required) = of_type(&all, "Hubbub.Keys.RotationRequired")[0];
    assert_eq!(required["data"]["reason"], "offboarding");
    assert!(required["data"]["deadline"].as_str().is_some());
    let (_, stale) = of_type(&all, "Hubbub.Keys.StaleCallerDetected")[0];
    assert_eq!(stale["data"]["version"], 1);
    assert_eq!(stale["data"]["sourceAddress"], "127.0.0.1");
    // No key material in any event.
    for (request, _) in &all {
        let body = String::from_utf8_lossy(&request.body);
        assert!(!body.contains(&old) && !body.contains(&t.key(KeySlot::Primary)));
    }
    // The plain webhook got the rotation-required notice, not the key events.
    let hooks: Vec<Value> = consumer
        .posts()
        .into_iter()
        .filter(|r| r.path == "/hooks")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert!(hooks.iter().any(|h| h["type"] == "rotation_required"));
    assert!(
        !hooks
            .iter()
            .any(|h| h["type"] == "key_regenerated" || h["type"] == "first_stale_caller"),
        "{hooks:?}"
    );
}
