//! The scenarios: idle connections, connect storm, and broadcast ([`broadcast`]). Hubbub's clients are simple
//! WebSocket clients (no subprotocol), so a message arrives as its raw payload and the generator
//! spends almost nothing per message: it reads the 20-digit publish timestamp at the front.

use crate::proc_stats::{cpu_seconds, rss_bytes};
use crate::target::{payloads, sequence_id, Target};
use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod broadcast;
pub use broadcast::{broadcast, BroadcastOptions, PublishFrom};

pub(crate) type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Timestamps are the low 20 decimal digits of the Unix time in nanoseconds.
const STAMP_MODULO: u128 = 100_000_000_000_000_000_000;

/// A scenario's result: JSON, and rows for a table.
pub struct Report {
    pub json: Value,
    rows: Vec<(String, String)>,
}

impl Report {
    pub fn new(scenario: &str, target: &Target) -> Self {
        let mut report = Self {
            json: json!({ "scenario": scenario }),
            rows: vec![("scenario".into(), scenario.into())],
        };
        report.add("target", json!(target.name()), target.name().into());
        report
    }

    /// Adds a value shown as its JSON text.
    pub fn put(&mut self, name: &str, value: Value) {
        let shown = value.to_string();
        self.add(name, value, shown);
    }

    fn add(&mut self, name: &str, value: Value, shown: String) {
        self.json[name] = value;
        self.rows.push((name.to_string(), shown));
    }

    pub fn table(&self) -> String {
        let width = self.rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        self.rows
            .iter()
            .map(|(k, v)| format!("{k:<width$}  {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// A client URL's host and port.
fn authority(url: &str) -> anyhow::Result<(String, u16)> {
    let parsed = url::Url::parse(url).context("a client URL")?;
    let host = parsed.host_str().context("a client URL without a host")?;
    let port = parsed
        .port_or_known_default()
        .context("a client URL without a port")?;
    Ok((host.to_string(), port))
}

/// Where a client connects: its URL's host resolved.
async fn resolve(url: &str) -> anyhow::Result<std::net::SocketAddr> {
    let (host, port) = authority(url)?;
    let addr = tokio::net::lookup_host((host.as_str(), port)).await?.next();
    addr.with_context(|| format!("{host} does not resolve"))
}

/// Opens a WebSocket client. The handshake is written and read directly (one request, the
/// `101` status checked, nothing else parsed) so the generator spends little per connection and a
/// connect storm measures the server.
async fn connect(
    url: &str,
    addr: std::net::SocketAddr,
    subprotocol: Option<&str>,
) -> anyhow::Result<Client> {
    use tokio::io::AsyncReadExt;
    // Small buffers: the generator holds thousands of clients.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let parsed = url::Url::parse(url).context("a client URL")?;
    let host = match parsed.port() {
        Some(port) => format!("{}:{port}", parsed.host_str().unwrap_or_default()),
        None => parsed.host_str().unwrap_or_default().to_string(),
    };
    let path = match parsed.query() {
        Some(query) => format!("{}?{query}", parsed.path()),
        None => parsed.path().to_string(),
    };
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: aHViYnViLWJlbmNoLWtleQ==\r\n"
    );
    if let Some(subprotocol) = subprotocol {
        request.push_str(&format!("Sec-WebSocket-Protocol: {subprotocol}\r\n"));
    }
    request.push_str("\r\n");
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| "a TCP connection failed")?;
    stream.set_nodelay(true)?;
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::with_capacity(512);
    let end = loop {
        if let Some(at) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if response.len() > 16 * 1024 || stream.read_buf(&mut response).await? == 0 {
            bail!("the server closed the connection during the handshake");
        }
    };
    if !response.starts_with(b"HTTP/1.1 101") {
        let status = String::from_utf8_lossy(&response[..response.len().min(64)]).into_owned();
        bail!(
            "the WebSocket upgrade was refused: {}",
            status.lines().next().unwrap_or("")
        );
    }
    // Frames the server sent right after its answer (a `connected` message) are kept.
    let rest = response.split_off(end);
    Ok(WebSocketStream::from_partially_read(
        MaybeTlsStream::Plain(stream),
        rest,
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        Some(config),
    )
    .await)
}

/// The name of group `k` of `groups`: `g` when there is one.
fn group_name(k: usize, groups: usize) -> String {
    if groups <= 1 {
        "g".to_string()
    } else {
        format!("g{k}")
    }
}

/// Members of group `k` when `connections` are dealt round-robin into `groups`.
fn group_size(k: usize, connections: usize, groups: usize) -> u64 {
    let groups = groups.max(1);
    (connections / groups + usize::from(k < connections % groups)) as u64
}

/// One subscriber to open: its URL (with its token) and what it says after the handshake.
struct Subscriber {
    url: String,
    hello: Option<String>,
    /// MQTT: its client id, the topic it subscribes to and at which QoS.
    mqtt: Option<(String, String, u8)>,
}

/// A unique MQTT client id (ASCII letters and digits only): the run's process id, `role`, `i`.
pub(crate) fn mqtt_client_id(role: &str, i: usize) -> String {
    format!("b{}{role}{i}", std::process::id())
}

/// `count` subscribers dealt round-robin into `groups`, with URLs and tokens minted ahead of the
/// clock: token signing is the app server's work, not the service's.
fn subscribers(target: &Target, count: usize, groups: usize) -> Vec<Subscriber> {
    (0..count)
        .map(|i| {
            let group = group_name(i % groups.max(1), groups);
            Subscriber {
                url: target.client_url(&format!("user{i}"), &[&group], &[]),
                hello: target.hello(&[&group]),
                mqtt: target
                    .mqtt_qos()
                    .map(|qos| (mqtt_client_id("s", i), group.clone(), qos)),
            }
        })
        .collect()
}

/// Opens every subscriber with at most `concurrency` handshakes in flight; returns the clients
/// with each connect latency in microseconds.
async fn open_many(
    target: &Target,
    subscribers: Vec<Subscriber>,
    concurrency: usize,
) -> anyhow::Result<(Vec<Client>, Vec<u64>)> {
    // Each endpoint is resolved once, so a connect storm does not measure the generator's name
    // lookups (subscribers may be spread over several nodes).
    let mut resolved: std::collections::HashMap<(String, u16), std::net::SocketAddr> =
        Default::default();
    let mut opening = Vec::with_capacity(subscribers.len());
    for subscriber in subscribers {
        let key = authority(&subscriber.url)?;
        let addr = match resolved.get(&key) {
            Some(addr) => *addr,
            None => {
                let addr = resolve(&subscriber.url).await?;
                resolved.insert(key, addr);
                addr
            }
        };
        opening.push((subscriber, addr));
    }
    let count = opening.len();
    let subprotocol = target.subprotocol();
    let results: Vec<anyhow::Result<(Client, u64)>> = futures_util::stream::iter(opening)
        .map(|(subscriber, addr)| async move {
            let started = Instant::now();
            let mut client = connect(&subscriber.url, addr, subprotocol).await?;
            if let Some(hello) = subscriber.hello {
                client.send(Message::Text(hello.into())).await?;
            }
            // MQTT: connected once CONNACK and SUBACK are in (nothing is published before).
            if let Some((id, topic, qos)) = &subscriber.mqtt {
                crate::mqtt::handshake(&mut client, id, topic, *qos).await?;
            }
            Ok((client, started.elapsed().as_micros() as u64))
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut clients = Vec::with_capacity(count);
    let mut latencies = Vec::with_capacity(count);
    for result in results {
        let (client, latency) = result?;
        clients.push(client);
        latencies.push(latency);
    }
    Ok((clients, latencies))
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1_048_576.0)
}

/// Keeps clients alive (reading answers pings) until the returned tasks are aborted.
fn keep_reading(clients: Vec<Client>) -> Vec<tokio::task::JoinHandle<()>> {
    clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move { while let Some(Ok(_)) = client.next().await {} })
        })
        .collect()
}

pub async fn idle(target: &Target, pid: Option<u32>, connections: usize) -> anyhow::Result<Report> {
    let before = pid.and_then(rss_bytes);
    let (clients, _) = open_many(target, subscribers(target, connections, 1), 256).await?;
    let readers = keep_reading(clients);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = pid.and_then(rss_bytes);
    let mut report = Report::new("idle", target);
    report.add("connections", json!(connections), connections.to_string());
    if let (Some(before), Some(after)) = (before, after) {
        let per = after.saturating_sub(before) as f64 / connections as f64;
        report.add("server_rss_before_bytes", json!(before), mib(before));
        report.add("server_rss_after_bytes", json!(after), mib(after));
        report.add(
            "server_bytes_per_connection",
            json!(per.round()),
            format!("{:.0} B ({:.2} KiB)", per, per / 1024.0),
        );
    }
    for reader in readers {
        reader.abort();
    }
    Ok(report)
}

pub async fn connect_storm(
    target: &Target,
    pid: Option<u32>,
    connections: usize,
    concurrency: usize,
) -> anyhow::Result<Report> {
    let subscribers = subscribers(target, connections, 1);
    let cpu_before = cpu_seconds(pid);
    let own_cpu_before = cpu_seconds(None);
    let started = Instant::now();
    let (clients, mut latencies) = open_many(target, subscribers, concurrency).await?;
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let mut report = Report::new("connect-storm", target);
    report.add("connections", json!(connections), connections.to_string());
    report.add("concurrency", json!(concurrency), concurrency.to_string());
    let rate = connections as f64 / elapsed;
    report.add(
        "connections_per_second",
        json!(rate.round()),
        format!("{rate:.0}/s"),
    );
    report.add(
        "connect_p50_us",
        json!(percentile(&latencies, 0.5)),
        format!("{} µs", percentile(&latencies, 0.5)),
    );
    report.add(
        "connect_p99_us",
        json!(percentile(&latencies, 0.99)),
        format!("{} µs", percentile(&latencies, 0.99)),
    );
    if let (Some(a), Some(b)) = (cpu_before, cpu_seconds(pid)) {
        report.add(
            "server_cpu_seconds",
            json!(b - a),
            format!("{:.2} s", b - a),
        );
    }
    if let (Some(a), Some(b)) = (own_cpu_before, cpu_seconds(None)) {
        report.add(
            "generator_cpu_seconds",
            json!(b - a),
            format!("{:.2} s", b - a),
        );
    }
    drop(clients);
    Ok(report)
}
