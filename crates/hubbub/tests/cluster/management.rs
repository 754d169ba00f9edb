//! Questions and membership across nodes: existence of connections, users and groups, group
//! and user membership, paged group listings, permissions, leaving and closing, all asked of a
//! node that does not hold the connection.

use crate::support::{cluster, converged, Nats, SERIAL};
use serde_json::Value;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn questions_and_membership_changes_are_answered_across_nodes() {
    use reqwest::Method;
    let _serial = SERIAL.lock().await;
    let nats = Nats::start();
    let [a, b, c] = cluster(&nats);
    let (key, _) = converged(&[&a, &b, &c]).await;
    let (mut u1, id1) = b.client(&key, "u1", &[]).await;
    let (mut u2, id2) = c.client(&key, "u2", &["g"]).await;
    let api = "api-version=2024-12-01";
    let started = Instant::now();
    // Existence, asked on A, which has no connection at all.
    assert_eq!(
        a.chat(&key, Method::HEAD, &format!("connections/{id1}"))
            .await,
        200
    );
    assert_eq!(
        a.chat(&key, Method::HEAD, &format!("connections/{id2}"))
            .await,
        200
    );
    assert_eq!(
        a.chat(&key, Method::HEAD, "connections/b-0123456789abcdef")
            .await,
        404
    );
    assert_eq!(
        a.chat(&key, Method::HEAD, "connections/z-0123456789abcdef")
            .await,
        404,
        "no such node"
    );
    assert_eq!(a.chat(&key, Method::HEAD, "users/u1").await, 200);
    assert_eq!(a.chat(&key, Method::HEAD, "users/nobody").await, 404);
    assert_eq!(a.chat(&key, Method::HEAD, "groups/g").await, 200);
    assert_eq!(a.chat(&key, Method::HEAD, "groups/empty").await, 404);
    assert_eq!(
        b.chat(&key, Method::HEAD, "groups/g").await,
        200,
        "asked on a node without members"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "9 questions took {:?}",
        started.elapsed()
    );

    // Membership changed through A for connections and users of B and C.
    assert_eq!(
        a.chat(&key, Method::PUT, &format!("groups/g/connections/{id1}"))
            .await,
        200
    );
    assert_eq!(
        a.chat(&key, Method::PUT, "groups/g/connections/b-0123456789abcdef")
            .await,
        404
    );
    assert_eq!(a.chat(&key, Method::PUT, "users/u2/groups/g3").await, 200);
    assert_eq!(
        c.rest(
            &key,
            &format!("/api/hubs/chat/groups/g/:send?{api}"),
            "to g"
        )
        .await,
        202
    );
    assert_eq!(u1.next_data().await.as_deref(), Some("to g"));
    assert_eq!(u2.next_data().await.as_deref(), Some("to g"));
    assert_eq!(
        b.rest(
            &key,
            &format!("/api/hubs/chat/groups/g3/:send?{api}"),
            "to g3"
        )
        .await,
        202
    );
    assert_eq!(u2.next_data().await.as_deref(), Some("to g3"));

    // The group's connections, listed through A, paged across nodes in id order.
    let mut expected = [id1.clone(), id2.clone()];
    expected.sort();
    let (status, body) = a
        .call(
            &key,
            Method::GET,
            &format!("/api/hubs/chat/groups/g/connections?{api}&maxpagesize=1"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        page["value"][0]["connectionId"],
        expected[0].as_str(),
        "{page}"
    );
    let user_of = |id: &str| if id == id1 { "u1" } else { "u2" };
    assert_eq!(page["value"][0]["userId"], user_of(&expected[0]), "{page}");
    let next = page["nextLink"].as_str().expect("a next page").to_string();
    let (status, body) = a.call(&key, Method::GET, &next, None).await;
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        page["value"][0]["connectionId"],
        expected[1].as_str(),
        "{page}"
    );
    assert!(page["nextLink"].is_null(), "{page}");
    // Permissions of a connection on B, through A.
    let perm = format!("permissions/sendToGroup/connections/{id1}");
    let (status, _) = a
        .call(
            &key,
            Method::PUT,
            &format!("/api/hubs/chat/{perm}?{api}&targetName=g"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let check = format!("/api/hubs/chat/{perm}?{api}&targetName=g");
    assert_eq!(a.call(&key, Method::HEAD, &check, None).await.0, 200);
    assert_eq!(a.call(&key, Method::DELETE, &check, None).await.0, 204);
    assert_eq!(a.call(&key, Method::HEAD, &check, None).await.0, 404);

    // Leaving and closing, through A.
    let (status, _) = a
        .call(
            &key,
            Method::DELETE,
            &format!("/api/hubs/chat/users/u2/groups/g3?{api}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(a.chat(&key, Method::HEAD, "groups/g3").await, 404);
    let (status, _) = a
        .call(
            &key,
            Method::POST,
            &format!("/api/hubs/chat/users/u2/:closeConnections?{api}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert!(u2.closed().await, "u2's connection on C was closed");
    assert_eq!(a.chat(&key, Method::HEAD, "users/u2").await, 404);
    let (status, _) = c
        .call(
            &key,
            Method::DELETE,
            &format!("/api/hubs/chat/connections/{id1}?{api}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert!(u1.closed().await, "u1's connection on B was closed");
    assert_eq!(
        c.chat(&key, Method::HEAD, &format!("connections/{id1}"))
            .await,
        404
    );
}
