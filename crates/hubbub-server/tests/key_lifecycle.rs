//! Key lifecycle beyond Azure: usage per key, enforced rotation with a deadline (controlled
//! clock), grace periods, and the key age policy.

mod common;

use common::{assert_error, TestServer};
use hubbub_proto::keys::KeySlot;
use hubbub_server::Settings;
use serde_json::{json, Value};
use std::time::Duration;

/// The audit log's event names, oldest first.
async fn audit_events(t: &TestServer) -> Vec<String> {
    let audit = t.admin_json("/admin/audit").await;
    audit["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect()
}

fn fast() -> Settings {
    Settings {
        maintenance_interval_ms: Some(20),
        ..Settings::default()
    }
}

#[tokio::test]
async fn usage_moves_with_rest_calls_and_connections_per_slot_and_survives_a_restart() {
    let t = TestServer::start_with(fast()).await;
    let (primary, secondary) = (t.key(KeySlot::Primary), t.key(KeySlot::Secondary));
    for _ in 0..3 {
        assert_eq!(t.send_with_key(&secondary).await, 202);
    }
    assert_eq!(t.send_with_key(&primary).await, 202);
    let token = t.client_token(&primary, "hub", None, &[], &[]);
    let (_ws, _) = t
        .json_client("hub", &token, "json.webpubsub.azure.v1")
        .await;
    let usage = t.admin_json("/admin/keys/usage").await;
    assert_eq!(usage["secondary"]["restRequests"], 3);
    assert_eq!(usage["secondary"]["restRequestsLastHour"], 3);
    assert_eq!(usage["secondary"]["clientConnections"], 0);
    assert_eq!(usage["primary"]["restRequests"], 1);
    assert_eq!(usage["primary"]["clientConnections"], 1);
    assert_eq!(usage["primary"]["usesLast15Minutes"], 2);
    assert!(usage["primary"]["lastUsedAt"].is_string());
    let t = t.restart().await;
    let after = t.admin_json("/admin/keys/usage").await;
    assert_eq!(after, usage, "saved at shutdown, loaded at start");
    // An hour later the window is empty, the totals remain.
    t.clock.advance_secs(3601);
    let later = t.admin_json("/admin/keys/usage").await;
    assert_eq!(
        (
            later["secondary"]["restRequests"].as_u64(),
            later["secondary"]["restRequestsLastHour"].as_u64()
        ),
        (Some(3), Some(0))
    );
}

async fn require(t: &TestServer, body: Value) -> reqwest::Response {
    t.admin_post("/admin/keys/require-rotation", body).await
}

#[tokio::test]
async fn a_required_rotation_disables_the_key_at_the_deadline_until_it_is_regenerated() {
    let t = TestServer::start_with(fast()).await;
    let (primary, secondary) = (t.key(KeySlot::Primary), t.key(KeySlot::Secondary));
    let response = require(
        &t,
        json!({"keyType": "Primary", "by": "2h", "reason": "found in a public repository"}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let keys: Value = response.json().await.unwrap();
    assert_eq!(keys["primary"]["status"], "rotationRequired");
    assert_eq!(
        keys["primary"]["rotation"]["reason"],
        "found in a public repository"
    );
    assert_eq!(keys["secondary"]["status"], "ok");

    // Before the deadline the key works, REST and clients.
    assert_eq!(t.send_with_key(&primary).await, 202);
    t.clock.advance_secs(2 * 3600);
    // After it: refused with a message that says why; the other key is untouched.
    let token = t.rest_token(&primary, "/api/hubs/chat/:send?api-version=2024-12-01");
    let body = assert_error(t.send_to_all("chat", &token).await, 401, "Unauthorized").await;
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("must be rotated") && message.contains("public repository"),
        "{message}"
    );
    assert_eq!(t.send_with_key(&secondary).await, 202);
    let client = t.client_token(&primary, "hub", None, &[], &[]);
    assert_eq!(
        t.ws_connect(&format!("/client/hubs/hub?access_token={client}"), None)
            .await
            .err(),
        Some(401)
    );
    assert_eq!(t.keys().await["primary"]["status"], "disabled");
    // The housekeeper records it once.
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            audit_events(&t).await.iter().any(|e| e == "key_disabled")
        })
        .await
    );

    // Regenerating restores service with the new key and clears the requirement.
    let keys = t.regenerate("Primary").await;
    assert_eq!(keys["primary"]["status"], "ok");
    assert!(keys["primary"].get("rotation").is_none());
    assert_eq!(
        t.send_with_key(keys["primaryKey"].as_str().unwrap()).await,
        202
    );

    let events = audit_events(&t).await;
    assert_eq!(events.iter().filter(|e| **e == "key_disabled").count(), 1);
    assert!(
        events.ends_with(&[
            "rotation_required".to_string(),
            "key_disabled".into(),
            "regenerated".into()
        ]),
        "{events:?}"
    );
}

#[tokio::test]
async fn bad_rotation_requirements_are_refused_and_change_nothing() {
    let t = TestServer::start().await;
    for (body, code) in [
        (
            json!({"keyType": "Salt", "by": "1d", "reason": "x"}),
            "InvalidKeyType",
        ),
        (
            json!({"keyType": "Tertiary", "by": "1d", "reason": "x"}),
            "InvalidKeyType",
        ),
        (
            json!({"keyType": "Primary", "by": "soon", "reason": "x"}),
            "InvalidDeadline",
        ),
        (
            json!({"keyType": "Primary", "by": "1d", "reason": "  "}),
            "InvalidReason",
        ),
        (json!({"keyType": "Primary"}), "InvalidRequestBody"),
    ] {
        assert_error(require(&t, body).await, 400, code).await;
    }
    let keys = t.keys().await;
    assert_eq!(keys["primary"]["status"], "ok");
    assert_eq!(audit_events(&t).await.len(), 3, "only the generated keys");
}

#[tokio::test]
async fn a_grace_period_keeps_the_old_key_verifying_until_it_ends() {
    let t = TestServer::start_with(fast()).await;
    let old = t.key(KeySlot::Primary);
    let keys: Value = t
        .admin_post(
            "/admin/keys/regenerate",
            json!({"keyType": "Primary", "grace": "15m"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let new = keys["primaryKey"].as_str().unwrap().to_string();
    assert_eq!(keys["primary"]["retiring"][0]["version"], 1);
    assert_eq!(
        t.send_with_key(&old).await,
        202,
        "the old key still verifies during the grace period"
    );
    let metrics = t.admin_text("/metrics").await;
    assert!(
        metrics.contains("hubbub_key_retiring{slot=\"primary\"} 1"),
        "{metrics}"
    );
    assert_eq!(t.send_with_key(&new).await, 202);
    // The connection string shows only the new key.
    assert!(keys["primaryConnectionString"]
        .as_str()
        .unwrap()
        .contains(&new));
    t.clock.advance_secs(15 * 60 + 1);
    assert_eq!(t.send_with_key(&old).await, 401);
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            audit_events(&t).await.iter().any(|e| e == "grace_ended")
        })
        .await
    );
    assert!(t.keys().await["primary"].get("retiring").is_none());
    assert_error(
        t.admin_post(
            "/admin/keys/regenerate",
            json!({"keyType": "Primary", "grace": "forever"}),
        )
        .await,
        400,
        "InvalidGrace",
    )
    .await;
}

#[tokio::test]
async fn the_age_policy_marks_keys_due() {
    let t = TestServer::start_with(Settings {
        key_max_age_days: Some(90),
        ..Settings::default()
    })
    .await;
    let keys = t.keys().await;
    assert_eq!(keys["primary"]["status"], "ok");
    assert!(keys["primary"]["dueAt"].is_string());
    assert!(keys["salt"].get("dueAt").is_none());
    t.clock.advance_secs(61 * 86_400);
    assert_eq!(t.keys().await["primary"]["status"], "dueSoon");
    t.clock.advance_secs(30 * 86_400);
    let keys = t.keys().await;
    assert_eq!(
        (
            keys["primary"]["status"].as_str(),
            keys["primary"]["ageDays"].as_u64()
        ),
        (Some("due"), Some(91))
    );
    assert_eq!(
        t.send_with_key(&t.key(KeySlot::Primary)).await,
        202,
        "due is a warning, not a refusal"
    );
    let keys = t.regenerate("Primary").await;
    assert_eq!(keys["primary"]["status"], "ok");
}

#[tokio::test]
async fn metrics_show_key_state_and_usage_without_secrets() {
    let t = TestServer::start().await;
    assert_eq!(t.send_with_key(&t.key(KeySlot::Secondary)).await, 202);
    require(
        &t,
        json!({"keyType": "Primary", "by": "1d", "reason": "drill"}),
    )
    .await;
    let token = t.client_token(&t.key(KeySlot::Primary), "hub", None, &[], &[]);
    let (_ws, _) = t
        .json_client("hub", &token, "json.webpubsub.azure.v1")
        .await;
    let unauthenticated = t.http.get(t.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(unauthenticated.status(), 401);
    let text = t.admin_text("/metrics").await;
    for line in [
        "hubbub_key_rotation_required{slot=\"primary\"} 1",
        "hubbub_key_rotation_required{slot=\"secondary\"} 0",
        "hubbub_key_disabled{slot=\"primary\"} 0",
        "hubbub_key_authentications_total{slot=\"secondary\",kind=\"rest\"} 1",
        "hubbub_key_authentications_total{slot=\"primary\",kind=\"connection\"} 1",
        "hubbub_connections{hub=\"hub\"} 1",
        "hubbub_key_version{slot=\"salt\"} 1",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    for secret in [
        t.key(KeySlot::Primary),
        t.key(KeySlot::Secondary),
        t.key(KeySlot::Salt),
        t.admin_token(),
    ] {
        assert!(!text.contains(&secret));
    }
    let on_public = t.http.get(t.public_url("/metrics")).send().await.unwrap();
    assert_eq!(
        on_public.status(),
        404,
        "metrics only on the admin listener"
    );
}

#[tokio::test]
async fn rotation_notices_go_to_a_signed_webhook_once_and_are_retried_when_it_is_down() {
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use common::app_server::{AppServer, Recorded};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let received: Arc<Mutex<Vec<(HeaderMap, String)>>> = Arc::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let (record, count) = (Arc::clone(&received), Arc::clone(&calls));
    let webhook = AppServer::start(Arc::new(move |request: &Recorded| {
        if count.fetch_add(1, Ordering::SeqCst) == 0 {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        let body = String::from_utf8_lossy(&request.body).into_owned();
        record.lock().unwrap().push((request.headers.clone(), body));
        StatusCode::OK.into_response()
    }))
    .await;
    let url = format!("{}/hooks/hubbub", webhook.url);
    let secret = "a-webhook-secret-of-some-length";
    let t = TestServer::start_with(Settings {
        maintenance_interval_ms: Some(20),
        notifications: Some(hubbub_server::keys::notices::NotificationSettings {
            webhook_url: Some(url),
            webhook_secret: Some(secret.into()),
            retry_base_secs: Some(10),
            ..Default::default()
        }),
        ..Settings::default()
    })
    .await;
    require(
        &t,
        json!({"keyType": "Secondary", "by": "3d", "reason": "offboarding"}),
    )
    .await;
    // The first attempt fails; nothing more happens until the retry is due.
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            calls.load(Ordering::SeqCst) >= 1
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let notices = t.admin_json("/admin/notices").await;
    assert_eq!(
        (
            notices[0]["status"].as_str(),
            notices[0]["attempts"].as_u64()
        ),
        (Some("pending"), Some(1))
    );
    assert_eq!(notices[0]["lastError"], "the webhook answered 503");
    t.clock.advance_secs(11);
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            !received.lock().unwrap().is_empty()
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let delivered = received.lock().unwrap().clone();
    assert_eq!(delivered.len(), 1, "sent once");
    let (headers, body) = &delivered[0];
    let payload: Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        (
            payload["type"].as_str(),
            payload["slot"].as_str(),
            payload["reason"].as_str()
        ),
        (
            Some("rotation_required"),
            Some("secondary"),
            Some("offboarding")
        )
    );
    let timestamp: i64 = headers["x-hubbub-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        headers["x-hubbub-signature"].to_str().unwrap(),
        hubbub_server::keys::notices::webhook_signature(secret, timestamp, body)
    );
    for key in [
        t.key(KeySlot::Primary),
        t.key(KeySlot::Secondary),
        t.key(KeySlot::Salt),
    ] {
        assert!(!body.contains(&key), "no key material in notices");
    }
    let events = audit_events(&t).await;
    assert!(
        events.ends_with(&[
            "rotation_required".to_string(),
            "notice_failed".into(),
            "notice_sent".into()
        ]),
        "{events:?}"
    );
    let metrics = t.admin_text("/metrics").await;
    assert!(
        metrics.contains("hubbub_notices{status=\"sent\"} 1"),
        "{metrics}"
    );
    // Near the deadline another notice goes out, once.
    t.clock.advance_secs(2 * 86_400 + 3600);
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            received.lock().unwrap().len() >= 2
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kinds: Vec<String> = received
        .lock()
        .unwrap()
        .iter()
        .map(|(_, b)| {
            serde_json::from_str::<Value>(b).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(kinds, ["rotation_required", "rotation_deadline_near"]);
}
