//! The scenarios: idle connections, connect storm, broadcast. Hubbub's clients are simple
//! WebSocket clients (no subprotocol), so a message arrives as its raw payload and the generator
//! spends almost nothing per message: it reads the 20-digit publish timestamp at the front.

use crate::proc_stats::{cpu_seconds, rss_bytes};
use crate::target::{payloads, Target};
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

async fn connect(url: &str) -> anyhow::Result<Client> {
    // Small buffers: the generator holds thousands of clients.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (client, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), false)
        .await
        .with_context(|| "a WebSocket connection failed")?;
    Ok(client)
}

/// Opens `count` clients with at most `concurrency` handshakes in flight; returns them with each
/// connect latency in microseconds.
async fn open_many(
    target: &Target,
    count: usize,
    concurrency: usize,
    groups: &[&str],
) -> anyhow::Result<(Vec<Client>, Vec<u64>)> {
    let urls: Vec<String> = (0..count)
        .map(|i| target.client_url(&format!("user{i}"), groups))
        .collect();
    let hello = target.hello(groups);
    let results: Vec<anyhow::Result<(Client, u64)>> = futures_util::stream::iter(urls)
        .map(|url| {
            let hello = hello.clone();
            async move {
                let started = Instant::now();
                let mut client = connect(&url).await?;
                if let Some(hello) = hello {
                    client.send(Message::Text(hello.into())).await?;
                }
                Ok((client, started.elapsed().as_micros() as u64))
            }
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
    let (clients, _) = open_many(target, connections, 256, &["g"]).await?;
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
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let (clients, mut latencies) = open_many(target, connections, concurrency, &["g"]).await?;
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
    drop(clients);
    Ok(report)
}

pub struct BroadcastOptions {
    pub subscribers: usize,
    pub size: usize,
    pub seconds: f64,
    pub rate: f64,
    pub publishers: usize,
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

/// Sends messages to group `g` of the target.
enum Publisher {
    /// The Pusher HTTP API: each request signed anew.
    Pusher { http: reqwest::Client },
    Http {
        http: reqwest::Client,
        url: String,
        token: Option<String>,
    },
    /// NATS over TCP; every `NATS_WINDOW` messages a PING waits for its PONG, so the publisher
    /// cannot run arbitrarily far ahead of the server.
    Nats {
        writer: tokio::io::BufWriter<tokio::net::tcp::OwnedWriteHalf>,
        reader: tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
        sent: u64,
    },
}

impl Publisher {
    async fn open(target: &Target, http: reqwest::Client) -> anyhow::Result<Self> {
        Ok(match target {
            Target::Hubbub { .. } => {
                let (url, token) = target
                    .rest("/groups/g/:send?api-version=2024-12-01")
                    .context("a REST URL")?;
                Publisher::Http {
                    http,
                    url,
                    token: Some(token),
                }
            }
            Target::Pusher { .. } => Publisher::Pusher { http },
            Target::Ws { publish_url, .. } => Publisher::Http {
                http,
                url: publish_url.clone(),
                token: None,
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

    /// Publishes one message.
    async fn publish(&mut self, target: &Target, payload: &str) -> anyhow::Result<()> {
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
            Publisher::Http { http, url, token } => {
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
                    .write_all(format!("PUB g {}\r\n{payload}\r\n", payload.len()).as_bytes())
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
        }
    }
}

pub async fn broadcast(
    target: Arc<Target>,
    cpu_pids: &[u32],
    options: BroadcastOptions,
) -> anyhow::Result<Report> {
    if options.size < 20 {
        bail!("--size must be at least 20 (the timestamp)");
    }
    let (clients, _) = open_many(&target, options.subscribers, 256, &["g"]).await?;
    let received = Arc::new(AtomicU64::new(0));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // Every subscriber reads; a sample of deliveries (1 in `sample`) records latency.
    let sample = if options.rate > 0.0 { 1 } else { 16 };
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
        .map(|_| {
            let (http, target, published, failed, size) = (
                http.clone(),
                Arc::clone(&target),
                Arc::clone(&published),
                Arc::clone(&failed),
                options.size,
            );
            tokio::spawn(async move {
                let mut publisher = match Publisher::open(&target, http).await {
                    Ok(p) => p,
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                };
                let mut ticker = interval.map(tokio::time::interval);
                while Instant::now() < deadline {
                    if let Some(ticker) = ticker.as_mut() {
                        ticker.tick().await;
                    }
                    match publisher.publish(&target, &payload(size)).await {
                        Ok(()) => published.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    let publish_seconds = started.elapsed().as_secs_f64();
    let expected = published.load(Ordering::Relaxed) * options.subscribers as u64;
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

    let mut report = Report::new("broadcast", &target);
    report.add(
        "subscribers",
        json!(options.subscribers),
        options.subscribers.to_string(),
    );
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
