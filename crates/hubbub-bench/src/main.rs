//! `hubbub-bench`: opens many WebSocket clients against a Web PubSub endpoint with real client
//! tokens, publishes through the REST API with signed tokens (as the SDKs do), and reports
//! connect rate, fan-out throughput, end-to-end latency, loss, and the server's memory and CPU
//! (read from /proc) as JSON and as a table. Subscribers can also speak MQTT 5 over WebSocket
//! (`--protocol mqtt`, and `--peer mosquitto` for an MQTT broker side by side).

mod mqtt;
mod proc_stats;
mod rotation;
mod scenarios;
mod target;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "hubbub-bench",
    about = "Load generator for Hubbub and other Web PubSub endpoints"
)]
struct Cli {
    /// Hubbub's connection string (`Endpoint=…;AccessKey=…;Version=1.0;`).
    #[arg(long, env = "HUBBUB_BENCH_CONNECTION_STRING")]
    connection_string: Option<String>,
    /// Benchmark a peer instead of Hubbub: `ws` (needs --ws-url, --publish-url), `nats`
    /// (needs --ws-url, --nats-addr), `soketi` (needs --pusher-app) or `mosquitto` (any MQTT
    /// broker: MQTT 5 subscribers over WebSocket at --ws-url, no token, subscribing at
    /// --mqtt-qos; the publisher speaks MQTT over TCP to --mqtt-addr, QoS 0).
    #[arg(long)]
    peer: Option<String>,
    /// The peer's WebSocket URL.
    #[arg(long)]
    ws_url: Option<String>,
    /// The `ws` peer's HTTP publish URL.
    #[arg(long)]
    publish_url: Option<String>,
    /// soketi's app as `id:key:secret` (with --peer soketi; --ws-url and --publish-url are the
    /// WebSocket and HTTP bases, e.g. ws://127.0.0.1:6001 and http://127.0.0.1:6001).
    #[arg(long)]
    pusher_app: Option<String>,
    /// NATS's TCP address (host:port) for publishers.
    #[arg(long)]
    nats_addr: Option<String>,
    /// The MQTT broker's TCP address (host:port) for publishers (with --peer mosquitto).
    #[arg(long)]
    mqtt_addr: Option<String>,
    /// The QoS MQTT subscribers (`--protocol mqtt`, `--peer mosquitto`) subscribe at: 0, or 1
    /// (each QoS 1 PUBLISH is answered with a PUBACK).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    mqtt_qos: u8,
    /// The server's process id, to read its memory and CPU time from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Hubbub in cluster mode: endpoints (`http://host:port`, comma-separated) the subscribers
    /// connect to in turn; publishing stays on the connection string's endpoint.
    #[arg(long, value_delimiter = ',')]
    client_endpoint: Vec<String>,
    /// More processes whose CPU time counts as the server's in `broadcast` (the other nodes,
    /// nats-server), comma-separated.
    #[arg(long, value_delimiter = ',')]
    extra_pids: Vec<u32>,
    /// Hub to use.
    #[arg(long, default_value = "bench")]
    hub: String,
    /// How Hubbub's subscribers speak: raw frames (simple), json (`json.webpubsub.azure.v1`),
    /// json-reliable (`json.reliable.webpubsub.azure.v1`, sequence ids acknowledged) or mqtt
    /// (MQTT 5 over WebSocket at `/clients/mqtt/hubs/{hub}`: CONNECT, then SUBSCRIBE to the
    /// group's name as the topic at --mqtt-qos; publishing stays REST).
    #[arg(long, value_enum, default_value_t = target::ClientProtocol::Simple)]
    protocol: target::ClientProtocol,
    /// Print JSON only (no table).
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Open N connections, let them sit, and measure server memory per connection.
    Idle {
        #[arg(long, default_value_t = 1000)]
        connections: usize,
    },
    /// Open N connections as fast as possible (token verification included).
    ConnectStorm {
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Connection attempts in flight at once.
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
    },
    /// Reliable clients receive a steady stream while primary, secondary and salt are regenerated
    /// again and again (Hubbub only): counts drops, losses and publish errors.
    Rotation {
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Messages per second to the group.
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// The admin listener's URL.
        #[arg(long)]
        admin_url: String,
        /// The admin token.
        #[arg(long, env = "HUBBUB_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: String,
    },
    /// N subscribers in one group; publish through REST and measure deliveries and latency.
    Broadcast {
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        #[command(flatten)]
        publishing: Publishing,
    },
    /// Many small groups: N connections dealt into G groups, each message to a random group.
    Groups {
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        #[arg(long, default_value_t = 1000)]
        groups: usize,
        #[command(flatten)]
        publishing: Publishing,
    },
}

/// How the fan-out scenarios publish.
#[derive(Debug, Args)]
struct Publishing {
    /// Payload bytes per message (at least 24: the timestamp).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Seconds to publish.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Messages per second; 0 publishes as fast as the server accepts.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Publishers at once (for the maximum rate).
    #[arg(long, default_value_t = 16)]
    publishers: usize,
    /// Publish through the REST API or from clients (Hubbub only).
    #[arg(long, value_enum, default_value_t = scenarios::PublishFrom::Rest)]
    publish_from: scenarios::PublishFrom,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let need = |value: Option<String>, name: &str| {
        value.ok_or_else(|| anyhow::anyhow!("--peer needs {name}"))
    };
    let target = match cli.peer.as_deref() {
        None | Some("hubbub") => {
            let cs = cli
                .connection_string
                .ok_or_else(|| anyhow::anyhow!("--connection-string is required"))?;
            target::Target::hubbub(&cs, &cli.hub, cli.protocol)?
                .with_client_endpoints(cli.client_endpoint)
                .with_mqtt_qos(cli.mqtt_qos)
        }
        Some("ws") => target::Target::Ws {
            ws_url: need(cli.ws_url, "--ws-url")?,
            publish_url: need(cli.publish_url, "--publish-url")?,
        },
        Some("soketi") => {
            let app = need(cli.pusher_app, "--pusher-app id:key:secret")?;
            let mut parts = app.splitn(3, ':').map(str::to_owned);
            let (Some(app_id), Some(key), Some(secret)) =
                (parts.next(), parts.next(), parts.next())
            else {
                anyhow::bail!("--pusher-app must be id:key:secret");
            };
            target::Target::Pusher {
                ws_url: need(cli.ws_url, "--ws-url")?,
                http_base: need(cli.publish_url, "--publish-url")?,
                app_id,
                key,
                secret,
            }
        }
        Some("nats") => target::Target::Nats {
            ws_url: need(cli.ws_url, "--ws-url")?,
            tcp_addr: need(cli.nats_addr, "--nats-addr")?,
        },
        Some("mosquitto") => target::Target::Mqtt {
            ws_url: need(cli.ws_url, "--ws-url")?,
            tcp_addr: need(cli.mqtt_addr, "--mqtt-addr")?,
            qos: cli.mqtt_qos,
        },
        Some(other) => {
            anyhow::bail!("unknown peer '{other}': hubbub, ws, nats, soketi or mosquitto")
        }
    };
    let report = runtime.block_on(async {
        match cli.scenario {
            Scenario::Idle { connections } => {
                scenarios::idle(&target, cli.server_pid, connections).await
            }
            Scenario::ConnectStorm {
                connections,
                concurrency,
            } => scenarios::connect_storm(&target, cli.server_pid, connections, concurrency).await,
            Scenario::Broadcast {
                subscribers,
                publishing,
            } => {
                fan_out(
                    target,
                    &cli.server_pid,
                    cli.extra_pids,
                    subscribers,
                    1,
                    publishing,
                )
                .await
            }
            Scenario::Groups {
                connections,
                groups,
                publishing,
            } => {
                fan_out(
                    target,
                    &cli.server_pid,
                    cli.extra_pids,
                    connections,
                    groups,
                    publishing,
                )
                .await
            }
            Scenario::Rotation {
                connections,
                seconds,
                rate,
                admin_url,
                admin_token,
            } => {
                rotation::rotation(
                    std::sync::Arc::new(target),
                    rotation::RotationOptions {
                        connections,
                        seconds,
                        rate,
                        admin_url,
                        admin_token,
                    },
                )
                .await
            }
        }
    })?;
    if !cli.json {
        eprintln!("{}", report.table());
    }
    println!("{}", serde_json::to_string(&report.json)?);
    Ok(())
}

/// The broadcast and many-small-groups scenarios: `subscribers` dealt into `groups`.
async fn fan_out(
    target: target::Target,
    server_pid: &Option<u32>,
    extra_pids: Vec<u32>,
    subscribers: usize,
    groups: usize,
    publishing: Publishing,
) -> anyhow::Result<scenarios::Report> {
    let cpu_pids: Vec<u32> = server_pid.iter().copied().chain(extra_pids).collect();
    scenarios::broadcast(
        std::sync::Arc::new(target),
        &cpu_pids,
        scenarios::BroadcastOptions {
            subscribers,
            groups,
            size: publishing.size,
            seconds: publishing.seconds,
            rate: publishing.rate,
            publishers: publishing.publishers,
            from: publishing.publish_from,
        },
    )
    .await
}
