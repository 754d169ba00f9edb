//! What the cluster scenarios share: one test at a time, free ports, tokens signed as the SDKs
//! sign them, a three-node cluster whose keys have converged, and the helpers below.

mod client;
mod nats;
mod node;
mod recorder;

pub use client::Client;
pub use nats::{Nats, NatsCluster};
pub use node::Node;
pub use recorder::{Recorder, Request};

use base64::Engine;
use serde_json::Value;
use std::time::{Duration, Instant};

/// The tests measure latencies and run several processes each: one at a time.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The secret the nodes of the test cluster share.
pub const CLUSTER_SECRET: &str = "the-test-cluster-secret-shared-by-every-node";

/// Writes a cluster secret file (0600) into `dir` and returns its path.
pub fn secret_file(dir: &std::path::Path, secret: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("cluster.secret");
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn sign(claims: Value, key: &str) -> String {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let input = format!(
        "{}.{}",
        b64(br#"{"alg":"HS256","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    );
    let signature = b64(&hubbub_proto::jwt::hmac_sha256(
        key.as_bytes(),
        input.as_bytes(),
    ));
    format!("{input}.{signature}")
}

pub fn cluster(nats: &Nats) -> [Node; 3] {
    ["a", "b", "c"].map(|id| Node::start(nats, id))
}

/// Waits until every node shows the same primary key; returns it.
pub async fn converged(nodes: &[&Node]) -> (String, u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut seen = Vec::new();
        for node in nodes {
            seen.push(node.primary().await);
        }
        if seen.windows(2).all(|w| w[0] == w[1]) {
            return seen.remove(0);
        }
        assert!(Instant::now() < deadline, "nodes disagree: {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The primary regenerations in an audit log.
pub fn primary_regenerations(audit: &Value) -> usize {
    audit["value"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["event"] == "regenerated" && e["slot"] == "primary")
                .count()
        })
        .unwrap_or(0)
}
