//! The admin API and its ARM-shaped twins against a real server: authentication, key listing,
//! regeneration, bad input that changes nothing, concurrency, and persistence across restarts.

mod common;

use common::{assert_error, TestServer};
use hubbub_proto::keys::KeySlot;
use serde_json::{json, Value};

const ARM_BASE: &str =
    "/subscriptions/sub1/resourceGroups/rg1/providers/Microsoft.SignalRService/webPubSub/hubbub";

#[tokio::test]
async fn admin_routes_need_the_admin_token() {
    let t = TestServer::start().await;
    let no_token = t.http.get(t.admin_url("/admin/keys")).send().await.unwrap();
    let body = assert_error(no_token, 401, "Unauthorized").await;
    assert!(body["message"].as_str().unwrap().contains("Authorization"));
    let wrong = t
        .http
        .get(t.admin_url("/admin/keys"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_error(wrong, 401, "Unauthorized").await;
    // An access key is not an admin token.
    let with_key = t
        .http
        .get(t.admin_url("/admin/keys"))
        .bearer_auth(t.key(KeySlot::Primary))
        .send()
        .await
        .unwrap();
    assert_error(with_key, 401, "Unauthorized").await;
    let regenerate = t
        .http
        .post(t.admin_url("/admin/keys/regenerate"))
        .bearer_auth("wrong")
        .json(&json!({"keyType": "Primary"}))
        .send()
        .await
        .unwrap();
    assert_error(regenerate, 401, "Unauthorized").await;
    assert_eq!(t.keys().await["primary"]["version"], 1, "nothing changed");
    // The admin API is not served on the public listener.
    let on_public = t
        .http
        .get(t.public_url("/admin/keys"))
        .bearer_auth(t.admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(on_public.status(), 404);
}

#[tokio::test]
async fn get_keys_shows_the_key_set_and_slot_metadata() {
    let t = TestServer::start().await;
    let keys = t.keys().await;
    let primary = t.key(KeySlot::Primary);
    assert_eq!(keys["primaryKey"], primary.as_str());
    assert_eq!(
        keys["primaryConnectionString"],
        format!("Endpoint={};AccessKey={primary};Version=1.0;", t.endpoint())
    );
    assert!(!keys["secondaryConnectionString"]
        .as_str()
        .unwrap()
        .contains("Port="));
    for slot in ["primary", "secondary", "salt"] {
        assert_eq!(keys[slot]["version"], 1);
        let created = keys[slot]["createdAt"].as_str().unwrap();
        assert!(created.ends_with('Z') && created.contains('T'), "{created}");
    }
    // The salt is never shown.
    assert!(!keys.to_string().contains(&t.key(KeySlot::Salt)));
}

#[tokio::test]
async fn bad_regenerate_requests_are_refused_and_change_nothing() {
    let t = TestServer::start().await;
    let before = t.keys().await;
    let post_raw = |body: Vec<u8>| {
        t.http
            .post(t.admin_url("/admin/keys/regenerate"))
            .bearer_auth(t.admin_token())
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let body = assert_error(
        t.admin_post("/admin/keys/regenerate", json!({"keyType": "Tertiary"}))
            .await,
        400,
        "InvalidKeyType",
    )
    .await;
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("Primary, Secondary or Salt"));
    assert_error(
        t.admin_post("/admin/keys/regenerate", json!({"keyType": 7}))
            .await,
        400,
        "InvalidKeyType",
    )
    .await;
    assert_error(
        t.admin_post("/admin/keys/regenerate", json!({})).await,
        400,
        "InvalidRequestBody",
    )
    .await;
    assert_error(
        post_raw(b"primary".to_vec()).await.unwrap(),
        400,
        "InvalidRequestBody",
    )
    .await;
    let mut huge = br#"{"keyType":"Primary","pad":""#.to_vec();
    huge.extend(std::iter::repeat_n(b'x', 70 * 1024));
    huge.extend(br#""}"#);
    assert_error(post_raw(huge).await.unwrap(), 413, "RequestEntityTooLarge").await;
    let after = t.keys().await;
    for field in ["primaryKey", "secondaryKey"] {
        assert_eq!(before[field], after[field]);
    }
    for slot in ["primary", "secondary", "salt"] {
        assert_eq!(after[slot]["version"], 1);
    }
}

#[tokio::test]
async fn concurrent_regenerations_of_primary_and_secondary_both_stick() {
    let t = TestServer::start().await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..8 {
        let slot = if i % 2 == 0 { "Primary" } else { "Secondary" };
        let request = t
            .http
            .post(t.admin_url("/admin/keys/regenerate"))
            .bearer_auth(t.admin_token())
            .json(&json!({ "keyType": slot }));
        calls.spawn(async move { request.send().await.unwrap().status() });
    }
    while let Some(status) = calls.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    let keys = t.keys().await;
    assert_eq!(keys["primary"]["version"], 5);
    assert_eq!(keys["secondary"]["version"], 5);
    // What memory says is what the disk says.
    let t = t.restart().await;
    let reloaded = t.keys().await;
    assert_eq!(reloaded["primaryKey"], keys["primaryKey"]);
    assert_eq!(reloaded["secondaryKey"], keys["secondaryKey"]);
}

#[tokio::test]
async fn restart_keeps_keys_salt_versions_and_admin_token() {
    let t = TestServer::start().await;
    t.regenerate("Secondary").await;
    let keys = t.keys().await;
    let salt = t.key(KeySlot::Salt);
    let token = t.admin_token();
    let t = t.restart().await;
    assert_eq!(t.admin_token(), token);
    assert_eq!(t.key(KeySlot::Salt), salt);
    let again = t.keys().await;
    assert_eq!(again["primaryKey"], keys["primaryKey"]);
    assert_eq!(again["secondaryKey"], keys["secondaryKey"]);
    assert_eq!(again["secondary"]["version"], 2);
    assert_eq!(
        again["secondary"]["createdAt"],
        keys["secondary"]["createdAt"]
    );
    assert!(!t.running().first_start);
}

#[tokio::test]
async fn the_audit_log_records_who_and_from_where_without_key_material() {
    let t = TestServer::start().await;
    let before = t.key(KeySlot::Primary);
    t.regenerate("Primary").await;
    let page = t.admin_json("/admin/audit").await;
    let events = page["value"].as_array().unwrap();
    assert_eq!(
        events.len(),
        4,
        "three generated keys and one regeneration: {page}"
    );
    let last = events.last().unwrap();
    assert_eq!(last["slot"], "primary");
    assert_eq!(last["event"], "regenerated");
    assert_eq!(
        (last["oldVersion"].as_u64(), last["newVersion"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(last["actor"], "admin-token");
    assert_eq!(last["source"], "127.0.0.1");
    assert!(last["at"].as_str().unwrap().ends_with('Z'));
    let text = page.to_string();
    for secret in [
        before,
        t.key(KeySlot::Primary),
        t.key(KeySlot::Secondary),
        t.key(KeySlot::Salt),
        t.admin_token(),
    ] {
        assert!(!text.contains(&secret), "no key material in the audit log");
    }
    // Paging.
    let first = t.admin_json("/admin/audit?limit=3").await;
    assert_eq!(first["value"].as_array().unwrap().len(), 3);
    let next = first["nextLink"].as_str().unwrap().to_string();
    let second = t.admin_json(&next).await;
    assert_eq!(second["value"].as_array().unwrap().len(), 1);
    assert!(second.get("nextLink").is_none());
    assert_eq!(t.admin_get("/admin/audit?limit=0").await.status(), 400);
}

#[tokio::test]
async fn arm_list_and_regenerate_keys() {
    let t = TestServer::start().await;
    let list = t
        .admin_post(
            &format!("{ARM_BASE}/listKeys?api-version=2024-03-01"),
            json!(null),
        )
        .await;
    assert_eq!(list.status(), 200);
    let listed: Value = list.json().await.unwrap();
    let mut fields: Vec<_> = listed.as_object().unwrap().keys().cloned().collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "primaryConnectionString",
            "primaryKey",
            "secondaryConnectionString",
            "secondaryKey"
        ]
    );
    assert_eq!(listed["primaryKey"], t.key(KeySlot::Primary).as_str());

    let regenerated = t
        .admin_post(
            &format!("{ARM_BASE}/regenerateKey?api-version=2024-03-01"),
            json!({"keyType": "Primary"}),
        )
        .await;
    assert_eq!(regenerated.status(), 200);
    let regenerated: Value = regenerated.json().await.unwrap();
    assert_ne!(regenerated["primaryKey"], listed["primaryKey"]);
    assert_eq!(regenerated["secondaryKey"], listed["secondaryKey"]);
    assert_eq!(regenerated["primaryKey"], t.key(KeySlot::Primary).as_str());

    // Any subscription, group and name; path matching is case-insensitive.
    let other =
        "/SUBSCRIPTIONS/x/resourcegroups/y/providers/microsoft.signalrservice/webpubsub/z/listkeys";
    assert_eq!(t.admin_post(other, json!(null)).await.status(), 200);
}

#[tokio::test]
async fn arm_errors_use_the_arm_envelope() {
    let t = TestServer::start().await;
    let response = t
        .http
        .post(t.admin_url(&format!("{ARM_BASE}/listKeys")))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "Unauthorized");
    let response = t
        .admin_post(
            &format!("{ARM_BASE}/regenerateKey"),
            json!({"keyType": "Both"}),
        )
        .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "InvalidKeyType");
    let response = t
        .admin_post(&format!("{ARM_BASE}/restart"), json!(null))
        .await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "ResourceNotFound");
    assert_eq!(t.keys().await["primary"]["version"], 1);
}
