//! The scenarios: idle connections, connect storm, broadcast. Hubbub's clients are simple
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

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

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

/// Where published messages come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PublishFrom {
    /// The REST API, with signed tokens (as the server SDKs do).
    Rest,
    /// Clients on `json.webpubsub.azure.v1` with the `webpubsub.sendToGroup` role, each message
    /// with an `ackId` awaited before the next (Hubbub only).
    Clients,
}

pub struct BroadcastOptions {
    /// Connections, dealt round-robin into `groups`.
    pub subscribers: usize,
    /// 1 is the broadcast scenario (group `g`); more spreads messages over random groups.
    pub groups: usize,
    pub size: usize,
    pub seconds: f64,
    pub rate: f64,
    pub publishers: usize,
    pub from: PublishFrom,
}

fn payload(size: usize) -> String {
    let mut text = format!("{:020}", now_nanos() % STAMP_MODULO);
    while text.len() < size {
        text.push('x');
    }
    text
}

/// Messages a NATS publisher sends before it waits for a PONG.
const NATS_WINDOW: u64 = 64;

/// Sends messages to a group of the target.
enum Publisher {
    /// The Pusher HTTP API: each request signed anew.
    Pusher { http: reqwest::Client },
    /// Hubbub's REST API (a URL and token per group, signed once) or the `ws` peer's publish URL.
    Http {
        http: reqwest::Client,
        urls: std::collections::HashMap<String, (String, Option<String>)>,
    },
    /// NATS over TCP; every `NATS_WINDOW` messages a PING waits for its PONG, so the publisher
    /// cannot run arbitrarily far ahead of the server.
    Nats {
        writer: tokio::io::BufWriter<tokio::net::tcp::OwnedWriteHalf>,
        reader: tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
        sent: u64,
    },
    /// A Hubbub client sending `sendToGroup` messages and awaiting each ack.
    Client { client: Client, ack_id: u64 },
}

impl Publisher {
    async fn open(
        target: &Target,
        http: reqwest::Client,
        from: PublishFrom,
        index: usize,
    ) -> anyhow::Result<Self> {
        if from == PublishFrom::Clients {
            let Target::Hubbub { .. } = target else {
                bail!("--publish-from clients is for Hubbub only");
            };
            let url = target.client_url(
                &format!("publisher{index}"),
                &[],
                &["webpubsub.sendToGroup"],
            );
            let addr = resolve(&url).await?;
            let mut client = connect(&url, addr, Some("json.webpubsub.azure.v1")).await?;
            // The `connected` message comes first.
            client
                .next()
                .await
                .context("the publisher's connected message")??;
            return Ok(Publisher::Client { client, ack_id: 0 });
        }
        Ok(match target {
            Target::Hubbub { .. } => Publisher::Http {
                http,
                urls: Default::default(),
            },
            Target::Pusher { .. } => Publisher::Pusher { http },
            Target::Ws { publish_url, .. } => Publisher::Http {
                http,
                urls: [("g".to_string(), (publish_url.clone(), None))].into(),
            },
            Target::Nats { tcp_addr, .. } => {
                let stream = TcpStream::connect(tcp_addr)
                    .await
                    .context("connecting to NATS")?;
                stream.set_nodelay(true)?;
                let (read, write) = stream.into_split();
                let mut writer = tokio::io::BufWriter::new(write);
                writer
                    .write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n")
                    .await?;
                Publisher::Nats {
                    writer,
                    reader: tokio::io::BufReader::new(read),
                    sent: 0,
                }
            }
        })
    }

    /// Publishes one message to `group`.
    async fn publish(&mut self, target: &Target, group: &str, payload: &str) -> anyhow::Result<()> {
        match self {
            Publisher::Pusher { http } => {
                let (url, body) = target.pusher_publish(payload).context("a Pusher request")?;
                let status = http
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?
                    .status();
                if !status.is_success() {
                    bail!("publish answered {status}");
                }
                Ok(())
            }
            Publisher::Http { http, urls } => {
                if !urls.contains_key(group) {
                    let (url, token) = target
                        .rest(&format!("/groups/{group}/:send?api-version=2024-12-01"))
                        .context("a REST URL")?;
                    urls.insert(group.to_string(), (url, Some(token)));
                }
                let (url, token) = &urls[group];
                let mut request = http
                    .post(url.as_str())
                    .header("content-type", "text/plain")
                    .body(payload.to_string());
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                let status = request.send().await?.status();
                if !status.is_success() {
                    bail!("publish answered {status}");
                }
                Ok(())
            }
            Publisher::Nats {
                writer,
                reader,
                sent,
            } => {
                use tokio::io::AsyncBufReadExt;
                writer
                    .write_all(format!("PUB {group} {}\r\n{payload}\r\n", payload.len()).as_bytes())
                    .await?;
                *sent += 1;
                if sent.is_multiple_of(NATS_WINDOW) {
                    writer.write_all(b"PING\r\n").await?;
                    writer.flush().await?;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).await? == 0 {
                            bail!("NATS closed the connection");
                        }
                        if line.starts_with("PONG") {
                            break;
                        }
                        if line.starts_with("PING") {
                            writer.write_all(b"PONG\r\n").await?;
                        }
                    }
                } else {
                    writer.flush().await?;
                }
                Ok(())
            }
            Publisher::Client { client, ack_id } => {
                *ack_id += 1;
                let message = json!({"type": "sendToGroup", "group": group, "dataType": "text", "data": payload, "ackId": *ack_id, "noEcho": true});
                client
                    .send(Message::Text(message.to_string().into()))
                    .await?;
                loop {
                    let frame = client.next().await.context("the publisher was closed")??;
                    let Message::Text(text) = frame else { continue };
                    let reply: Value = serde_json::from_str(text.as_str())?;
                    if reply["type"] == "ack" && reply["ackId"] == *ack_id {
                        if reply["success"] != true {
                            bail!("a sendToGroup was refused: {}", reply["error"]);
                        }
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// A small xorshift generator: the groups messages go to.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

/// Reliable subscribers acknowledge after this many messages.
const ACK_EVERY: u64 = 64;

/// Subscribers in `groups` groups; messages published (through REST or from clients) to one
/// random group each, or to `g` when there is one group. Counts deliveries and losses, and
/// samples end-to-end latency from the timestamp each payload carries.
pub async fn broadcast(
    target: Arc<Target>,
    cpu_pids: &[u32],
    options: BroadcastOptions,
) -> anyhow::Result<Report> {
    if options.size < 20 {
        bail!("--size must be at least 20 (the timestamp)");
    }
    let groups = options.groups.max(1);
    if groups > 1 && matches!(*target, Target::Ws { .. } | Target::Pusher { .. }) {
        bail!("several groups are for Hubbub and NATS only");
    }
    let (clients, _) = open_many(
        &target,
        subscribers(&target, options.subscribers, groups),
        256,
    )
    .await?;
    let received = Arc::new(AtomicU64::new(0));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // Every subscriber reads; a sample of deliveries (1 in `sample`) records latency.
    let sample = if options.rate > 0.0 { 1 } else { 16 };
    let reliable = target.reliable();
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let received = Arc::clone(&received);
            let mut stopped = stopped.clone();
            let target = Arc::clone(&target);
            tokio::spawn(async move {
                let mut latencies: Vec<u64> = Vec::new();
                let mut found: Vec<(usize, usize)> = Vec::new();
                let mut n = 0u64;
                let mut acked = 0u64;
                loop {
                    let frame = tokio::select! {
                        frame = client.next() => frame,
                        _ = stopped.changed() => break,
                    };
                    let Some(Ok(frame)) = frame else { break };
                    let bytes: &[u8] = match &frame {
                        Message::Text(text) => text.as_bytes(),
                        Message::Binary(data) => data,
                        _ => continue,
                    };
                    found.clear();
                    payloads(&target, bytes, &mut found);
                    for &(start, end) in &found {
                        let payload = &bytes[start..end];
                        received.fetch_add(1, Ordering::Relaxed);
                        n += 1;
                        if n.is_multiple_of(sample) {
                            let stamp = std::str::from_utf8(&payload[..20.min(payload.len())]).ok();
                            if let Some(sent) = stamp.and_then(|s| s.parse::<u128>().ok()) {
                                let now = now_nanos() % STAMP_MODULO;
                                latencies.push((now.saturating_sub(sent) / 1000) as u64);
                            }
                        }
                    }
                    if reliable {
                        if let Some(sequence) =
                            sequence_id(bytes).filter(|s| s.saturating_sub(acked) >= ACK_EVERY)
                        {
                            acked = sequence;
                            let ack =
                                format!(r#"{{"type":"sequenceAck","sequenceId":{sequence}}}"#);
                            if client.send(Message::Text(ack.into())).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(options.publishers.max(1))
        .build()?;
    let published = Arc::new(AtomicU64::new(0));
    let expected = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let server_cpu_before =
        crate::proc_stats::cpu_seconds_of(cpu_pids).filter(|_| !cpu_pids.is_empty());
    let own_cpu_before = cpu_seconds(None);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(options.seconds);
    let publishers = if options.rate > 0.0 {
        1
    } else {
        options.publishers.max(1)
    };
    let interval = (options.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / options.rate));
    let tasks: Vec<_> = (0..publishers)
        .map(|index| {
            let (http, target, published, expected, failed) = (
                http.clone(),
                Arc::clone(&target),
                Arc::clone(&published),
                Arc::clone(&expected),
                Arc::clone(&failed),
            );
            let (size, from, connections) = (options.size, options.from, options.subscribers);
            tokio::spawn(async move {
                let mut publisher = match Publisher::open(&target, http, from, index).await {
                    Ok(p) => p,
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                };
                let names: Vec<String> = (0..groups).map(|k| group_name(k, groups)).collect();
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1));
                let mut ticker = interval.map(tokio::time::interval);
                while Instant::now() < deadline {
                    if let Some(ticker) = ticker.as_mut() {
                        ticker.tick().await;
                    }
                    let k = rng.below(groups);
                    match publisher.publish(&target, &names[k], &payload(size)).await {
                        Ok(()) => {
                            published.fetch_add(1, Ordering::Relaxed);
                            expected
                                .fetch_add(group_size(k, connections, groups), Ordering::Relaxed);
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    let publish_seconds = started.elapsed().as_secs_f64();
    let expected = expected.load(Ordering::Relaxed);
    let drain_deadline = Instant::now() + Duration::from_secs(10);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total_seconds = started.elapsed().as_secs_f64();
    let delivered = received.load(Ordering::Relaxed);
    let server_cpu = match (
        server_cpu_before,
        crate::proc_stats::cpu_seconds_of(cpu_pids),
    ) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let own_cpu = match (own_cpu_before, cpu_seconds(None)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let _ = stop.send(true);
    let mut latencies = Vec::new();
    for reader in readers {
        if let Ok(samples) = reader.await {
            latencies.extend(samples);
        }
    }
    latencies.sort_unstable();

    let scenario = if groups > 1 { "groups" } else { "broadcast" };
    let mut report = Report::new(scenario, &target);
    report.add(
        "subscribers",
        json!(options.subscribers),
        options.subscribers.to_string(),
    );
    if groups > 1 {
        report.add("groups", json!(groups), groups.to_string());
    }
    if let Some(subprotocol) = target.subprotocol() {
        report.add("subprotocol", json!(subprotocol), subprotocol.to_string());
    }
    let from = match options.from {
        PublishFrom::Rest => "rest",
        PublishFrom::Clients => "clients",
    };
    report.add("published_from", json!(from), from.to_string());
    report.add(
        "message_bytes",
        json!(options.size),
        options.size.to_string(),
    );
    let (published, failed) = (
        published.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    report.add("published", json!(published), published.to_string());
    report.add("publish_failures", json!(failed), failed.to_string());
    report.add("expected_deliveries", json!(expected), expected.to_string());
    report.add("delivered", json!(delivered), delivered.to_string());
    report.add(
        "lost",
        json!(expected.saturating_sub(delivered)),
        expected.saturating_sub(delivered).to_string(),
    );
    let rate = delivered as f64 / total_seconds.max(publish_seconds);
    report.add(
        "deliveries_per_second",
        json!(rate.round()),
        format!("{rate:.0}/s"),
    );
    for (name, p) in [
        ("latency_p50_us", 0.5),
        ("latency_p99_us", 0.99),
        ("latency_p999_us", 0.999),
    ] {
        let value = percentile(&latencies, p);
        report.add(name, json!(value), format!("{value} µs"));
    }
    if let Some(cpu) = server_cpu {
        let per_million = if delivered > 0 {
            cpu / delivered as f64 * 1e6
        } else {
            0.0
        };
        report.add("server_cpu_seconds", json!(cpu), format!("{cpu:.2} s"));
        report.add(
            "server_cpu_seconds_per_million_deliveries",
            json!(per_million),
            format!("{per_million:.3} s"),
        );
    }
    if let Some(cpu) = own_cpu {
        report.add("generator_cpu_seconds", json!(cpu), format!("{cpu:.2} s"));
    }
    Ok(report)
}
