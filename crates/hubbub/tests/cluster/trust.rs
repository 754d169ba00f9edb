//! What a process that can reach NATS, but has no cluster secret, can do to the cluster: read
//! no key, inject no message, answer or redirect no question, take no session, and bring back no
//! key through the bucket (forged, or replayed from a recording). And a node whose secret differs
//! does not start.

use crate::support::{cluster, converged, secret_file, Nats, Node, SERIAL};
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

/// A NATS client with no cluster secret.
async fn intruder(nats: &Nats) -> async_nats::Client {
    async_nats::connect(nats.url()).await.expect("NATS")
}

/// The value of one metric line (`name{labels}`) in a Prometheus text.
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in the metrics"))
}

/// The next message on `subscriber` whose subject starts with `prefix` and ends with `suffix`.
async fn captured(
    subscriber: &mut async_nats::Subscriber,
    prefix: &str,
    suffix: &str,
) -> async_nats::Message {
    let wait = async {
        loop {
            let message = subscriber.next().await.expect("subscribed");
            if message.subject.starts_with(prefix) && message.subject.ends_with(suffix) {
                return message;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .expect("the nodes' message was seen on NATS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_cluster_secret_nothing_can_be_injected_answered_or_taken() {
    let _serial = SERIAL.lock().await;
    let nats = Nats::start();
    let [a, b, c] = cluster(&nats);
    let (key, _) = converged(&[&a, &b, &c]).await;
    let (mut on_a, _) = a.client(&key, "u1", &["g"]).await;
    let (mut reliable, reliable_id, _) = a.reliable_client(&key, "u2", &[]).await;
    let intruder = intruder(&nats).await;
    let mut seen = intruder.subscribe("hubbub.>").await.unwrap();
    intruder.flush().await.unwrap();

    // A broadcast through B crosses NATS signed; the intruder records it.
    assert_eq!(b.broadcast(&key, "legit").await, 202);
    assert_eq!(on_a.next_data().await.as_deref(), Some("legit"));
    let recorded = captured(&mut seen, "hubbub.h.", ".m").await;
    assert!(
        recorded
            .headers
            .as_ref()
            .is_some_and(|h| h.get("Hubbub-Auth").is_some()),
        "messages between nodes are signed"
    );
    // Unsigned, and signed but altered: both refused by A.
    let altered = {
        let mut bytes = recorded.payload.to_vec();
        let at = bytes.len() - "legit".len();
        bytes[at..].copy_from_slice(b"forge");
        bytes::Bytes::from(bytes)
    };
    intruder
        .publish(recorded.subject.clone(), altered.clone())
        .await
        .unwrap();
    intruder
        .publish_with_headers(
            recorded.subject.clone(),
            recorded.headers.clone().unwrap(),
            altered,
        )
        .await
        .unwrap();
    intruder.flush().await.unwrap();
    assert_eq!(b.broadcast(&key, "after").await, 202);
    assert_eq!(
        on_a.next_data().await.as_deref(),
        Some("after"),
        "the forged messages never reached the client"
    );

    // A question recorded on its way to A cannot be sent again with another reply subject: the
    // answer (and, for a handover, the session) would go to the intruder.
    assert_eq!(c.chat(&key, Method::HEAD, "users/u1").await, 200);
    let question = captured(&mut seen, "hubbub.u.", ".q").await;
    let inbox = intruder.new_inbox();
    let mut answers = intruder.subscribe(inbox.clone()).await.unwrap();
    intruder
        .publish_with_reply_and_headers(
            question.subject.clone(),
            inbox,
            question.headers.clone().unwrap(),
            question.payload.clone(),
        )
        .await
        .unwrap();
    // An unsigned handover of A's reliable session to a node of the intruder's choosing.
    let handover = json!({"hub": "chat", "ask": {"op": "handover", "id": reliable_id, "to": "x"}});
    let stolen = tokio::time::timeout(
        Duration::from_secs(2),
        intruder.request("hubbub.n.a.q", handover.to_string().into()),
    )
    .await;
    assert!(
        !matches!(&stolen, Ok(Ok(reply)) if !reply.payload.is_empty()),
        "no answer to an unsigned handover"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), answers.next())
            .await
            .is_err(),
        "no answer to a redirected question"
    );
    // The session is still A's: a send through B reaches it.
    let path = format!("/api/hubs/chat/connections/{reliable_id}/:send?api-version=2024-12-01");
    assert_eq!(b.rest(&key, &path, "still yours").await, 202);
    let mut got = Vec::new();
    while let Some((data, _)) = reliable.next_sequenced().await {
        got.push(data);
        if got.last().is_some_and(|d| d == "still yours") {
            break;
        }
    }
    assert_eq!(
        got,
        ["legit", "after", "still yours"],
        "the broadcasts, then its own"
    );

    let refused = metric(
        &a.metrics().await,
        "hubbub_cluster_refused_total{what=\"message\"}",
    );
    assert!(refused >= 4, "A counted what it refused: {refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_ring_in_nats_is_sealed_and_a_forged_or_replayed_ring_brings_back_no_key() {
    let _serial = SERIAL.lock().await;
    let nats = Nats::start();
    let mut a = Node::start(&nats, "a");
    let b = Node::start(&nats, "b");
    let (old_key, _) = converged(&[&a, &b]).await;
    let intruder = intruder(&nats).await;
    let js = async_nats::jetstream::new(intruder.clone());
    let bucket = js.get_key_value("hubbub_keys").await.unwrap();
    let sealed_old = bucket.get("ring").await.unwrap().expect("the ring");
    assert!(sealed_old.starts_with(b"hbs1"), "sealed");
    let secondary = a.keys().await["secondaryKey"].as_str().unwrap().to_string();
    for key in [&old_key, &secondary] {
        assert!(
            !sealed_old.windows(key.len()).any(|w| w == key.as_bytes()),
            "no key in clear in NATS"
        );
    }

    // A forged ring (plain JSON, the intruder's own key) is refused, and put right.
    let forged_key = "Zm9yZ2VkLWtleS1mb3JnZWQta2V5LWZvcmdlZC1rZXk=";
    let slot =
        |value: &str, version: u64| json!({"value": value, "version": version, "createdAt": 1});
    let forged = json!({"generation": 1_000, "primary": slot(forged_key, 99), "secondary": slot(forged_key, 99), "salt": slot(forged_key, 99)});
    bucket.put("ring", forged.to_string().into()).await.unwrap();
    let healed = Instant::now();
    loop {
        let value = bucket.get("ring").await.unwrap().unwrap();
        if value.starts_with(b"hbs1") {
            break;
        }
        assert!(
            healed.elapsed() < Duration::from_secs(15),
            "a node writes its ring back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for node in [&a, &b] {
        assert_eq!(node.broadcast(forged_key, "x").await, 401, "forged key");
        assert_eq!(node.broadcast(&old_key, "x").await, 202, "real key");
        assert!(
            metric(
                &node.metrics().await,
                "hubbub_cluster_refused_total{what=\"value\"}"
            ) >= 1
        );
    }

    // Revoke the key; then the intruder puts back the ring it recorded before.
    let (status, body) = a.regenerate("Primary").await;
    assert_eq!(status, 200, "{body}");
    let (new_key, _) = converged(&[&a, &b]).await;
    assert_ne!(new_key, old_key);
    bucket.put("ring", sealed_old.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for node in [&a, &b] {
        assert_eq!(node.broadcast(&old_key, "x").await, 401, "the revoked key");
        assert_eq!(node.broadcast(&new_key, "x").await, 202);
    }
    // A restarted node remembers the generation it had, refuses the replay and writes its ring
    // back; a key change works after it.
    bucket.put("ring", sealed_old.clone()).await.unwrap();
    a.restart();
    assert_eq!(a.broadcast(&old_key, "x").await, 401, "after a restart too");
    assert_eq!(a.broadcast(&new_key, "x").await, 202);
    let (status, body) = b.regenerate("Secondary").await;
    assert_eq!(status, 200, "{body}");
    converged(&[&a, &b]).await;
    assert_ne!(bucket.get("ring").await.unwrap().unwrap(), sealed_old);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_cluster_secret_does_not_start() {
    let _serial = SERIAL.lock().await;
    let nats = Nats::start();
    let a = Node::start(&nats, "a");
    converged(&[&a]).await;
    let dir = tempfile::tempdir().unwrap();
    let other = secret_file(dir.path(), "a-different-secret-that-is-32-characters-long");
    let data = dir.path().join("data");
    let started = crate::common::Hubbub::start_with(
        &data,
        &[
            "--cluster",
            &nats.url(),
            "--node-id",
            "b",
            "--cluster-secret-file",
            other.to_str().unwrap(),
        ],
        &[],
    );
    let stderr = match started {
        Ok(_) => panic!("a node with another cluster secret must not start"),
        Err(stderr) => stderr,
    };
    assert!(
        stderr.contains("not sealed with this node's cluster secret"),
        "{stderr}"
    );
    assert!(!stderr.contains("different-secret"), "{stderr}");
    // Without a secret file at all: refused before anything starts.
    let none = crate::common::Hubbub::start_with(
        &dir.path().join("data2"),
        &["--cluster", &nats.url(), "--node-id", "c"],
        &[],
    );
    let stderr = none.err().expect("refused");
    assert!(stderr.contains("cluster_secret_file"), "{stderr}");
}
