//! The NATS side of a cluster test: one `nats-server -js` process, or three forming a NATS
//! cluster with replicated JetStream, on free loopback ports with stores in temporary directories.

use super::free_port;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn nats_binary() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
        .expect(
            "nats-server is not installed: `apt-get install nats-server` (scripts/test does it)",
        )
}

/// A `nats-server -js` process.
pub struct Nats {
    child: Option<Child>,
    port: u16,
    monitor: u16,
    store: tempfile::TempDir,
}

impl Nats {
    pub fn start() -> Self {
        let mut nats = Self {
            child: None,
            port: free_port(),
            monitor: free_port(),
            store: tempfile::tempdir().expect("temp dir"),
        };
        nats.restart();
        nats
    }

    /// (Re)starts the server on the same port and store.
    pub fn restart(&mut self) {
        let child = Command::new(nats_binary())
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-m",
                &self.monitor.to_string(),
                "-sd",
            ])
            .arg(self.store.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server and deletes its store: JetStream forgets every bucket and stream.
    pub fn lose_store(&mut self) {
        self.stop();
        for entry in std::fs::read_dir(self.store.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                std::fs::remove_dir_all(path).unwrap();
            } else {
                std::fs::remove_file(path).unwrap();
            }
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// A JetStream stream's details from the monitoring endpoint (`config`, `state`).
    pub async fn stream(&self, name: &str) -> Value {
        let url = format!(
            "http://127.0.0.1:{}/jsz?accounts=true&streams=true&config=true",
            self.monitor
        );
        let jsz = crate::common::get_json(&reqwest::Client::new(), &url, None).await;
        jsz["account_details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten())
            .find(|d| d["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Three `nats-server -js` processes forming one NATS cluster (JetStream replicated).
pub struct NatsCluster {
    /// Each server's process, client port and monitoring port.
    pub servers: Vec<(Child, u16, u16)>,
    _store: tempfile::TempDir,
}

impl NatsCluster {
    pub fn start() -> Self {
        let store = tempfile::tempdir().expect("temp dir");
        let ports: Vec<(u16, u16, u16)> = (0..3)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let routes = ports
            .iter()
            .map(|(_, route, _)| format!("nats://127.0.0.1:{route}"))
            .collect::<Vec<_>>()
            .join(",");
        let servers = ports
            .iter()
            .enumerate()
            .map(|(i, (client, route, monitor))| {
                let child = Command::new(nats_binary())
                    .args(["-js", "-a", "127.0.0.1", "-p", &client.to_string()])
                    .args(["-m", &monitor.to_string(), "-n", &format!("n{i}")])
                    .args(["--cluster_name", "hubbub", "--cluster"])
                    .arg(format!("nats://127.0.0.1:{route}"))
                    .args(["--routes", &routes, "-sd"])
                    .arg(store.path().join(format!("n{i}")))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn nats-server");
                (child, *client, *monitor)
            })
            .collect();
        Self {
            servers,
            _store: store,
        }
    }

    /// Waits until JetStream has elected its meta leader (streams can then be created).
    pub async fn ready(&self) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut leaders = 0;
            for (_, _, monitor) in &self.servers {
                let jsz = http
                    .get(format!("http://127.0.0.1:{monitor}/jsz"))
                    .send()
                    .await;
                if let Ok(response) = jsz {
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    if body["meta_cluster"]["leader"].is_string() {
                        leaders += 1;
                    }
                }
            }
            if leaders == self.servers.len() {
                return;
            }
            assert!(Instant::now() < deadline, "the NATS cluster did not form");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn urls(&self) -> String {
        self.servers
            .iter()
            .map(|(_, client, _)| format!("nats://127.0.0.1:{client}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn kill(&mut self, index: usize) {
        let (child, _, _) = &mut self.servers[index];
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
    }
}
