//! Managing connections over REST: membership, existence, permissions, closing with a reason,
//! and a group's connections listed page by page.

use crate::common::{next_frame, next_json, send_json, TestServer};
use crate::support::{rest, JSON};
use hubbub_proto::keys::KeySlot;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn membership_existence_permissions_and_close_by_rest() {
    let t = TestServer::start().await;
    let key = t.key(KeySlot::Primary);
    let (mut a, ca) = t
        .json_client(
            "hub",
            &t.client_token(&key, "hub", Some("ua"), &[], &[]),
            JSON,
        )
        .await;
    let id = ca["connectionId"].as_str().unwrap().to_string();
    let head = |path: String| {
        let t = &t;
        async move { rest(t, reqwest::Method::HEAD, &path, None).await }
    };
    assert_eq!(head(format!("/api/hubs/hub/connections/{id}")).await, 200);
    assert_eq!(head("/api/hubs/hub/connections/nope".into()).await, 404);
    assert_eq!(head("/api/hubs/hub/users/ua".into()).await, 200);
    assert_eq!(head("/api/hubs/hub/groups/g".into()).await, 404);
    assert_eq!(
        rest(
            &t,
            reqwest::Method::PUT,
            &format!("/api/hubs/hub/groups/g/connections/{id}"),
            None
        )
        .await,
        200
    );
    assert_eq!(
        rest(
            &t,
            reqwest::Method::PUT,
            "/api/hubs/hub/groups/g/connections/nope",
            None
        )
        .await,
        404
    );
    assert_eq!(head("/api/hubs/hub/groups/g".into()).await, 200);
    assert_eq!(
        rest(
            &t,
            reqwest::Method::DELETE,
            &format!("/api/hubs/hub/connections/{id}/groups"),
            None
        )
        .await,
        204
    );
    assert_eq!(head("/api/hubs/hub/groups/g".into()).await, 404);

    // Permissions: grant lets the client join; revoke takes it away.
    let perm = format!("/api/hubs/hub/permissions/joinLeaveGroup/connections/{id}?targetName=g2");
    assert_eq!(head(perm.clone()).await, 404);
    send_json(
        &mut a,
        json!({"type": "joinGroup", "group": "g2", "ackId": 1}),
    )
    .await;
    assert_eq!(next_json(&mut a).await["error"]["name"], "Forbidden");
    assert_eq!(rest(&t, reqwest::Method::PUT, &perm, None).await, 200);
    assert_eq!(head(perm.clone()).await, 200);
    send_json(
        &mut a,
        json!({"type": "joinGroup", "group": "g2", "ackId": 2}),
    )
    .await;
    assert_eq!(next_json(&mut a).await["success"], true);
    assert_eq!(rest(&t, reqwest::Method::DELETE, &perm, None).await, 204);
    assert_eq!(head(perm).await, 404);
    assert_eq!(
        rest(
            &t,
            reqwest::Method::PUT,
            &format!("/api/hubs/hub/permissions/nope/connections/{id}"),
            None
        )
        .await,
        400
    );

    // Close with a reason: the client hears it, then the socket closes.
    assert_eq!(
        rest(
            &t,
            reqwest::Method::DELETE,
            &format!("/api/hubs/hub/connections/{id}?reason=bye%20now"),
            None
        )
        .await,
        204
    );
    let disconnected = next_json(&mut a).await;
    assert_eq!(
        (
            disconnected["event"].as_str(),
            disconnected["message"].as_str()
        ),
        (Some("disconnected"), Some("bye now"))
    );
    assert!(matches!(
        next_frame(&mut a).await,
        Some(Message::Close(_)) | None
    ));
    assert_eq!(head(format!("/api/hubs/hub/connections/{id}")).await, 404);
    assert_eq!(head("/api/hubs/hub/users/ua".into()).await, 404);
}

#[tokio::test]
async fn listing_a_group_pages_through_every_connection_once() {
    let t = TestServer::start().await;
    let key = t.key(KeySlot::Primary);
    let mut clients = Vec::new();
    let mut ids = Vec::new();
    for i in 0..5 {
        let (ws, c) = t
            .json_client(
                "hub",
                &t.client_token(&key, "hub", Some(&format!("u{i}")), &[], &["g"]),
                JSON,
            )
            .await;
        ids.push(c["connectionId"].as_str().unwrap().to_string());
        clients.push(ws);
    }
    let mut listed = Vec::new();
    let mut next =
        Some("/api/hubs/hub/groups/g/connections?maxpagesize=2&api-version=2024-12-01".to_string());
    while let Some(path) = next {
        let token = t.rest_token(&key, &path);
        let page = t.get_json(&t.public_url(&path), &token).await;
        assert!(page["value"].as_array().unwrap().len() <= 2);
        for item in page["value"].as_array().unwrap() {
            listed.push(item["connectionId"].as_str().unwrap().to_string());
            assert!(item["userId"].as_str().unwrap().starts_with('u'));
        }
        next = page["nextLink"].as_str().map(str::to_owned);
    }
    listed.sort();
    ids.sort();
    assert_eq!(listed, ids);
}
