//! The broadcast scenario: subscribers in groups, messages published through REST or from
//! clients (or NATS, or MQTT over TCP), deliveries counted, losses found, end-to-end latency
//! sampled.

use super::*;

/// Where published messages come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PublishFrom {
    /// The REST API, with signed tokens (as the server SDKs do).
    Rest,
    /// Clients on `json.webpubsub.azure.v1` with the `webpubsub.sendToGroup` role, each message
    /// with an `ackId` awaited before the next (Hubbub only).
    Clients,
    /// Clients on `json.webpubsub.azure.v1`, each with one group stream per group: every message
    /// is a `streamData` fragment whose `streamAck` is awaited before the next (Hubbub only).
    Stream,
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
    /// MQTT over TCP (QoS 0 PUBLISH); every `NATS_WINDOW` messages a PINGREQ waits for its
    /// PINGRESP, as for NATS.
    Mqtt {
        writer: tokio::io::BufWriter<tokio::net::tcp::OwnedWriteHalf>,
        reader: tokio::net::tcp::OwnedReadHalf,
        framer: crate::mqtt::Framer,
        sent: u64,
    },
    /// A Hubbub client sending `sendToGroup` messages and awaiting each ack.
    Client { client: Client, ack_id: u64 },
    /// A Hubbub client writing fragments to a group stream per group (the stream id and the next
    /// sequence id), awaiting each `streamAck`.
    Stream {
        client: Client,
        index: usize,
        streams: std::collections::HashMap<String, (String, u64)>,
    },
}

/// Reads a client's frames until the JSON one `wanted` accepts; fails on a refusal `refused`
/// recognises (with its error).
async fn await_reply(
    client: &mut Client,
    wanted: impl Fn(&Value) -> bool,
    refused: impl Fn(&Value) -> bool,
) -> anyhow::Result<()> {
    loop {
        let frame = client.next().await.context("the publisher was closed")??;
        let Message::Text(text) = frame else { continue };
        let reply: Value = serde_json::from_str(text.as_str())?;
        if wanted(&reply) {
            return Ok(());
        }
        if refused(&reply) {
            bail!("refused: {reply}");
        }
    }
}

impl Publisher {
    async fn open(
        target: &Target,
        http: reqwest::Client,
        from: PublishFrom,
        index: usize,
    ) -> anyhow::Result<Self> {
        if from != PublishFrom::Rest {
            let Target::Hubbub { .. } = target else {
                bail!("--publish-from clients and stream are for Hubbub only");
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
            return Ok(match from {
                PublishFrom::Stream => Publisher::Stream {
                    client,
                    index,
                    streams: Default::default(),
                },
                _ => Publisher::Client { client, ack_id: 0 },
            });
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
            Target::Mqtt { tcp_addr, .. } => {
                let stream = TcpStream::connect(tcp_addr)
                    .await
                    .context("connecting to the MQTT broker")?;
                stream.set_nodelay(true)?;
                let (mut reader, write) = stream.into_split();
                let mut writer = tokio::io::BufWriter::new(write);
                let id = super::mqtt_client_id("p", index);
                writer.write_all(&crate::mqtt::connect(&id)).await?;
                writer.flush().await?;
                let mut framer = crate::mqtt::Framer::default();
                match read_tcp_packet(&mut reader, &mut framer).await? {
                    mqtt5_protocol::Packet::ConnAck(ack)
                        if ack.reason_code == mqtt5_protocol::ReasonCode::Success => {}
                    other => bail!("the MQTT publisher was refused: {other:?}"),
                }
                Publisher::Mqtt {
                    writer,
                    reader,
                    framer,
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
            Publisher::Mqtt {
                writer,
                reader,
                framer,
                sent,
            } => {
                writer
                    .write_all(&crate::mqtt::publish(group, payload))
                    .await?;
                *sent += 1;
                if sent.is_multiple_of(NATS_WINDOW) {
                    writer.write_all(&crate::mqtt::PINGREQ).await?;
                    writer.flush().await?;
                    while !matches!(
                        read_tcp_packet(reader, framer).await?,
                        mqtt5_protocol::Packet::PingResp
                    ) {}
                } else {
                    writer.flush().await?;
                }
                Ok(())
            }
            Publisher::Client { client, ack_id } => {
                *ack_id += 1;
                let id = *ack_id;
                let message = json!({"type": "sendToGroup", "group": group, "dataType": "text", "data": payload, "ackId": id, "noEcho": true});
                client
                    .send(Message::Text(message.to_string().into()))
                    .await?;
                await_reply(
                    client,
                    |r| r["type"] == "ack" && r["ackId"] == id && r["success"] == true,
                    |r| r["type"] == "ack" && r["ackId"] == id,
                )
                .await
            }
            Publisher::Stream {
                client,
                index,
                streams,
            } => {
                if !streams.contains_key(group) {
                    let stream_id = format!("bench-{index}-{group}");
                    let open = json!({"type": "sendToGroup", "group": group, "noEcho": true, "stream": {"streamId": stream_id}});
                    client.send(Message::Text(open.to_string().into())).await?;
                    let id = stream_id.clone();
                    await_reply(
                        client,
                        |r| r["type"] == "streamAck" && r["streamId"] == id.as_str(),
                        |r| r["type"] == "streamClosed" && r["streamId"] == id.as_str(),
                    )
                    .await?;
                    streams.insert(group.to_string(), (stream_id, 1));
                }
                let (stream_id, next) = streams.get_mut(group).context("the group's stream")?;
                let sequence = *next;
                let fragment = json!({"type": "streamData", "streamId": stream_id, "streamSequenceId": sequence, "dataType": "text", "data": payload});
                client
                    .send(Message::Text(fragment.to_string().into()))
                    .await?;
                *next += 1;
                let id = stream_id.clone();
                await_reply(
                    client,
                    |r| {
                        r["type"] == "streamAck"
                            && r["streamId"] == id.as_str()
                            && r["expectedSequenceId"] == sequence + 1
                    },
                    |r| {
                        (r["type"] == "streamClosed" || r["type"] == "streamNack")
                            && r["streamId"] == id.as_str()
                    },
                )
                .await
            }
        }
    }
}

/// The next MQTT packet from a TCP connection.
async fn read_tcp_packet(
    reader: &mut tokio::net::tcp::OwnedReadHalf,
    framer: &mut crate::mqtt::Framer,
) -> anyhow::Result<mqtt5_protocol::Packet> {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 512];
    loop {
        if let Some(packet) = framer.next_packet()? {
            return Ok(packet);
        }
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            bail!("the MQTT broker closed the connection");
        }
        framer.push(&chunk[..n]);
    }
}

/// What a subscriber counts: deliveries, and 1 in `sample` of them timed.
struct Tally {
    received: Arc<AtomicU64>,
    sample: u64,
    n: u64,
    latencies: Vec<u64>,
}

impl Tally {
    /// One delivery of `payload` (its first 20 bytes are the publish timestamp).
    fn count(&mut self, payload: &[u8]) {
        self.received.fetch_add(1, Ordering::Relaxed);
        self.n += 1;
        if self.n.is_multiple_of(self.sample) {
            let stamp = std::str::from_utf8(&payload[..20.min(payload.len())]).ok();
            if let Some(sent) = stamp.and_then(|s| s.parse::<u128>().ok()) {
                let now = now_nanos() % STAMP_MODULO;
                self.latencies
                    .push((now.saturating_sub(sent) / 1000) as u64);
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
    let mqtt = target.mqtt_qos().is_some();
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let received = Arc::clone(&received);
            let mut stopped = stopped.clone();
            let target = Arc::clone(&target);
            tokio::spawn(async move {
                let mut tally = Tally {
                    received,
                    sample,
                    n: 0,
                    latencies: Vec::new(),
                };
                let mut found: Vec<(usize, usize)> = Vec::new();
                let mut acked = 0u64;
                let mut framer = mqtt.then(crate::mqtt::Framer::default);
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
                    if let Some(framer) = framer.as_mut() {
                        // MQTT: every whole packet in the byte stream; QoS 1 PUBLISHes are
                        // acknowledged one by one, as a client library would.
                        framer.push(bytes);
                        let mut pubacks: Vec<u16> = Vec::new();
                        let malformed = loop {
                            match framer.next_packet() {
                                Ok(Some(mqtt5_protocol::Packet::Publish(publish))) => {
                                    tally.count(&publish.payload);
                                    pubacks.extend(publish.packet_id);
                                }
                                Ok(Some(_)) => {}
                                Ok(None) => break false,
                                Err(_) => break true,
                            }
                        };
                        for id in pubacks {
                            let ack = crate::mqtt::puback(id);
                            if client.send(Message::Binary(ack.into())).await.is_err() {
                                break;
                            }
                        }
                        if malformed {
                            break;
                        }
                        continue;
                    }
                    found.clear();
                    payloads(&target, bytes, &mut found);
                    for &(start, end) in &found {
                        tally.count(&bytes[start..end]);
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
                tally.latencies
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
    if let Some(qos) = target.mqtt_qos() {
        report.add("mqtt_qos", json!(qos), qos.to_string());
    }
    let from = match options.from {
        PublishFrom::Rest if matches!(*target, Target::Mqtt { .. }) => "mqtt",
        PublishFrom::Rest => "rest",
        PublishFrom::Clients => "clients",
        PublishFrom::Stream => "stream",
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
