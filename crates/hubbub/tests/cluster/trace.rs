//! The live trace of a cluster: a listener on one node with `cluster=true` sees what happens on
//! the others (a connection opening on B, closed through C with its reason), each event naming
//! its node; a listener without it sees its own node's events only.

use crate::support::{cluster, converged, Nats, Node, SERIAL};
use reqwest::Method;
use serde_json::Value;
use std::time::Duration;

/// A trace listener on `node`, reading into `seen`.
struct Trace {
    response: reqwest::Response,
    raw: String,
}

impl Trace {
    async fn open(node: &Node, query: &str) -> Self {
        // No overall timeout: the stream lasts as long as the test reads it.
        let http = reqwest::Client::new();
        let response = http
            .get(format!("{}/admin/trace{query}", node.running().admin_url()))
            .bearer_auth(node.admin_token())
            .send()
            .await
            .expect("trace request");
        assert_eq!(response.status(), 200);
        Self {
            response,
            raw: String::new(),
        }
    }

    fn events(&self) -> Vec<Value> {
        self.raw
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| serde_json::from_str(d.trim()).expect("JSON event"))
            .collect()
    }

    /// Reads until an event satisfies `wanted` or `limit` passes.
    async fn find(&mut self, limit: Duration, wanted: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(found) = self.events().into_iter().find(&wanted) {
                return Some(found);
            }
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Ok(Ok(Some(chunk))) => self.raw.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return None,
            }
        }
    }
}

fn opened(id: &str) -> impl Fn(&Value) -> bool + '_ {
    move |e| e["event"] == "connectionOpened" && e["connectionId"] == id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_listener_sees_every_node_and_a_plain_one_its_own() {
    let _serial = SERIAL.lock().await;
    let nats = Nats::start();
    let [a, b, c] = cluster(&nats);
    let (key, _) = converged(&[&a, &b, &c]).await;
    let mut everywhere = Trace::open(&a, "?cluster=true&hub=chat").await;
    let mut own = Trace::open(&a, "?hub=chat").await;

    // The other nodes start forwarding once A's ask reaches them: connect on B until the
    // listener sees one (bounded).
    let mut found = None;
    for attempt in 0..20 {
        let (client, id) = b.client(&key, &format!("u{attempt}"), &[]).await;
        if let Some(event) = everywhere
            .find(Duration::from_millis(500), opened(&id))
            .await
        {
            found = Some((client, id, event));
            break;
        }
    }
    let (mut client, id, event) = found.expect("B's connections reach A's cluster listener");
    assert_eq!(event["node"], "b", "{event}");
    assert_eq!(event["keySlot"], "primary");

    // Closed through C with a reason: A's cluster listener sees B's close, code and reason.
    let status = c
        .chat(
            &key,
            Method::DELETE,
            &format!("connections/{id}?reason=node%20maintenance"),
        )
        .await;
    assert_eq!(status, 204);
    assert!(client.closed().await);
    let closed = everywhere
        .find(Duration::from_secs(10), |e| {
            e["event"] == "connectionClosed" && e["connectionId"] == id.as_str()
        })
        .await
        .unwrap_or_else(|| panic!("the close on B: {}", everywhere.raw));
    assert_eq!(
        (
            &closed["node"],
            &closed["reason"],
            &closed["cause"],
            &closed["code"]
        ),
        (
            &Value::from("b"),
            &Value::from("node maintenance"),
            &Value::from("rest_close"),
            &Value::from(1000)
        ),
        "{closed}"
    );

    // A's own connection shows in both; B's never in the plain listener.
    let (_on_a, id_a) = a.client(&key, "local", &[]).await;
    let mine = own
        .find(Duration::from_secs(10), opened(&id_a))
        .await
        .expect("A's own connection");
    assert_eq!(mine["node"], "a");
    assert!(everywhere
        .find(Duration::from_secs(10), opened(&id_a))
        .await
        .is_some());
    assert!(
        own.events().iter().all(|e| e["node"] == "a"),
        "only A's events without cluster=true: {}",
        own.raw
    );
    assert!(!own.raw.contains(&key) && !everywhere.raw.contains(&key));
}
