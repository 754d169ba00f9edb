//! The endpoint under test and how to speak to it: Hubbub (Web PubSub: client tokens, simple
//! WebSocket clients, REST publishing with signed tokens, as the official SDKs do), or a peer for
//! side-by-side runs: a plain `ws` broadcast server (HTTP publish), NATS (WebSocket clients,
//! TCP publishing), soketi, or an MQTT broker such as Mosquitto (MQTT over WebSocket subscribers,
//! MQTT over TCP publishing).

use anyhow::Context;
use hubbub_proto::connection_string::ConnectionString;
use serde_json::json;
use std::time::{SystemTime, UNIX_EPOCH};

pub enum Target {
    Hubbub {
        endpoint: String,
        key: String,
        hub: String,
        protocol: ClientProtocol,
        /// Where subscribers connect, in turn (cluster mode: other nodes); empty: `endpoint`.
        client_endpoints: Vec<String>,
        next_client: std::sync::atomic::AtomicUsize,
        /// The QoS MQTT subscribers (`ClientProtocol::Mqtt`) subscribe at.
        mqtt_qos: u8,
    },
    /// Subscribers connect to `ws_url`; `POST publish_url` with the payload broadcasts it.
    Ws { ws_url: String, publish_url: String },
    /// Subscribers speak NATS over WebSocket at `ws_url`; publishers speak NATS over TCP.
    Nats { ws_url: String, tcp_addr: String },
    /// soketi (the Pusher protocol): subscribers join channel `g`; publishers use the Pusher
    /// HTTP API at `http_base`, signed with the app secret.
    Pusher {
        ws_url: String,
        http_base: String,
        app_id: String,
        key: String,
        secret: String,
    },
    /// An MQTT broker (Mosquitto): MQTT 5 subscribers over WebSocket at `ws_url` (no token),
    /// subscribing at `qos`; publishers speak MQTT over TCP at `tcp_addr` (QoS 0).
    Mqtt {
        ws_url: String,
        tcp_addr: String,
        qos: u8,
    },
}

/// How Hubbub's subscribers speak: raw frames, or one of the JSON subprotocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientProtocol {
    /// No subprotocol: a message arrives as its raw payload.
    Simple,
    /// `json.webpubsub.azure.v1`.
    Json,
    /// `json.reliable.webpubsub.azure.v1`: sequence ids, acknowledged by the generator.
    JsonReliable,
    /// MQTT 5 over WebSocket (subprotocol `mqtt`) at `/clients/mqtt/hubs/{hub}`: each subscriber
    /// sends CONNECT and SUBSCRIBEs to its group's name as the topic (at `--mqtt-qos`).
    Mqtt,
}

impl ClientProtocol {
    pub fn subprotocol(self) -> Option<&'static str> {
        match self {
            ClientProtocol::Simple => None,
            ClientProtocol::Json => Some("json.webpubsub.azure.v1"),
            ClientProtocol::JsonReliable => Some("json.reliable.webpubsub.azure.v1"),
            ClientProtocol::Mqtt => Some("mqtt"),
        }
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn sign(claims: serde_json::Value, key: &str) -> String {
    hubbub_proto::jwt::sign(claims.as_object().expect("object"), key.as_bytes(), None)
}

impl Target {
    pub fn hubbub(
        connection_string: &str,
        hub: &str,
        protocol: ClientProtocol,
    ) -> anyhow::Result<Self> {
        let parsed = ConnectionString::parse(connection_string).context("the connection string")?;
        Ok(Self::Hubbub {
            endpoint: parsed.endpoint,
            key: parsed.access_key,
            hub: hub.to_string(),
            protocol,
            client_endpoints: Vec::new(),
            next_client: Default::default(),
            mqtt_qos: 0,
        })
    }

    /// Hubbub: the QoS MQTT subscribers subscribe at.
    pub fn with_mqtt_qos(mut self, qos: u8) -> Self {
        if let Target::Hubbub { mqtt_qos, .. } = &mut self {
            *mqtt_qos = qos;
        }
        self
    }

    /// The QoS subscribers subscribe at when they speak MQTT; `None` when they do not.
    pub fn mqtt_qos(&self) -> Option<u8> {
        match self {
            Target::Hubbub {
                protocol: ClientProtocol::Mqtt,
                mqtt_qos,
                ..
            } => Some(*mqtt_qos),
            Target::Mqtt { qos, .. } => Some(*qos),
            _ => None,
        }
    }

    /// Hubbub: subscribers connect to these endpoints in turn (publishing stays on the
    /// connection string's endpoint).
    pub fn with_client_endpoints(mut self, endpoints: Vec<String>) -> Self {
        if let Target::Hubbub {
            client_endpoints, ..
        } = &mut self
        {
            *client_endpoints = endpoints;
        }
        self
    }

    /// The WebSocket subprotocol subscribers ask for.
    pub fn subprotocol(&self) -> Option<&'static str> {
        match self {
            Target::Hubbub { protocol, .. } => protocol.subprotocol(),
            Target::Mqtt { .. } => Some("mqtt"),
            _ => None,
        }
    }

    /// Whether subscribers must acknowledge sequence ids.
    pub fn reliable(&self) -> bool {
        matches!(
            self,
            Target::Hubbub {
                protocol: ClientProtocol::JsonReliable,
                ..
            }
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            Target::Hubbub { .. } => "hubbub",
            Target::Ws { .. } => "ws",
            Target::Nats { .. } => "nats",
            Target::Pusher { .. } => "soketi",
            Target::Mqtt { .. } => "mosquitto",
        }
    }

    /// The URL a subscriber in `groups` (with `roles`, Hubbub only) connects to.
    pub fn client_url(&self, user: &str, groups: &[&str], roles: &[&str]) -> String {
        match self {
            Target::Hubbub {
                endpoint,
                key,
                hub,
                client_endpoints,
                next_client,
                protocol,
                ..
            } => {
                let endpoint = if client_endpoints.is_empty() {
                    endpoint
                } else {
                    let i = next_client.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    &client_endpoints[i % client_endpoints.len()]
                };
                let now = now_secs();
                // MQTT clients join by SUBSCRIBE (at the QoS asked), so their tokens carry the
                // right to join each group instead of the groups themselves.
                let path = if *protocol == ClientProtocol::Mqtt {
                    format!("clients/mqtt/hubs/{hub}")
                } else {
                    format!("client/hubs/{hub}")
                };
                let mut claims = json!({"aud": format!("{endpoint}/{path}"), "iat": now, "exp": now + 3600, "sub": user});
                let mut roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
                if *protocol == ClientProtocol::Mqtt {
                    roles.extend(
                        groups
                            .iter()
                            .map(|g| format!("webpubsub.joinLeaveGroup.{g}")),
                    );
                } else {
                    claims["webpubsub.group"] = json!(groups);
                }
                if !roles.is_empty() {
                    claims["role"] = json!(roles);
                }
                let ws = endpoint.replacen("http", "ws", 1);
                format!("{ws}/{path}?access_token={}", sign(claims, key))
            }
            Target::Ws { ws_url, .. }
            | Target::Nats { ws_url, .. }
            | Target::Mqtt { ws_url, .. } => ws_url.clone(),
            Target::Pusher { ws_url, key, .. } => {
                format!("{ws_url}/app/{key}?protocol=7&client=hubbub-bench&version=1.0")
            }
        }
    }

    /// What a new subscriber sends after the handshake (NATS: CONNECT and SUB).
    pub fn hello(&self, groups: &[&str]) -> Option<String> {
        match self {
            Target::Nats { .. } => {
                let mut hello = String::from(
                    "CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1}\r\n",
                );
                for (i, group) in groups.iter().enumerate() {
                    hello.push_str(&format!("SUB {group} {}\r\n", i + 1));
                }
                hello.push_str("PING\r\n");
                Some(hello)
            }
            Target::Pusher { .. } => Some(
                groups
                    .iter()
                    .map(|g| {
                        json!({"event": "pusher:subscribe", "data": {"channel": g}}).to_string()
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            _ => None,
        }
    }

    /// A Pusher HTTP API request to trigger event `m` on channel `g`: URL and body.
    pub fn pusher_publish(&self, payload: &str) -> Option<(String, String)> {
        use hmac::Mac;
        use md5::Digest;
        let Target::Pusher {
            http_base,
            app_id,
            key,
            secret,
            ..
        } = self
        else {
            return None;
        };
        let body = json!({"name": "m", "channels": ["g"], "data": payload}).to_string();
        let body_md5 = hex::encode(md5::Md5::digest(body.as_bytes()));
        let path = format!("/apps/{app_id}/events");
        let query = format!(
            "auth_key={key}&auth_timestamp={}&auth_version=1.0&body_md5={body_md5}",
            now_secs()
        );
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).ok()?;
        mac.update(format!("POST\n{path}\n{query}").as_bytes());
        let signature = hex::encode(mac.finalize().into_bytes());
        Some((
            format!("{http_base}{path}?{query}&auth_signature={signature}"),
            body,
        ))
    }

    /// A Hubbub REST URL and its bearer token (`aud` = the full URL, as the JS SDK signs it).
    pub fn rest(&self, path_and_query: &str) -> Option<(String, String)> {
        match self {
            Target::Hubbub {
                endpoint, key, hub, ..
            } => {
                let url = format!("{endpoint}/api/hubs/{hub}{path_and_query}");
                let now = now_secs();
                let token = sign(json!({"aud": url, "iat": now, "exp": now + 3600}), key);
                Some((url, token))
            }
            _ => None,
        }
    }
}

/// Where the payloads are in one received frame: the frame itself, or for NATS each `MSG` in
/// it. Ranges, so the caller can reuse one vector for every frame. (MQTT subscribers frame their
/// byte stream instead: `crate::mqtt::Framer`.)
pub fn payloads(target: &Target, frame: &[u8], out: &mut Vec<(usize, usize)>) {
    match target {
        Target::Nats { .. } => {
            let mut offset = 0;
            while let Some(start) = find(&frame[offset..], b"MSG ") {
                let at = offset + start;
                let Some(line_end) = find(&frame[at..], b"\r\n") else {
                    break;
                };
                let header = std::str::from_utf8(&frame[at..at + line_end]).unwrap_or("");
                let Some(size) = header
                    .rsplit(' ')
                    .next()
                    .and_then(|s| s.parse::<usize>().ok())
                else {
                    break;
                };
                let body = at + line_end + 2;
                if frame.len() < body + size {
                    break;
                }
                out.push((body, body + size));
                offset = body + size;
            }
        }
        Target::Pusher { .. } => {
            // {"event":"m","channel":"g","data":"<payload>"}: our payloads need no escaping.
            if find(frame, b"\"event\":\"m\"").is_none() {
                return;
            }
            if let Some(at) = find(frame, b"\"data\":\"") {
                let start = at + 8;
                if let Some(len) = find(&frame[start..], b"\"") {
                    out.push((start, start + len));
                }
            }
        }
        Target::Hubbub {
            protocol: ClientProtocol::Json | ClientProtocol::JsonReliable,
            ..
        } => {
            // {"type":"message","from":"group","group":"g","dataType":"text","data":"<payload>"...}
            if find(frame, b"\"type\":\"message\"").is_none() {
                return;
            }
            // The payload-less last message of a group stream is not a delivery.
            if let Some(at) = find(frame, b"\"data\":\"") {
                let start = at + 8;
                if let Some(len) = find(&frame[start..], b"\"").filter(|len| *len > 0) {
                    out.push((start, start + len));
                }
            }
        }
        _ => out.push((0, frame.len())),
    }
}

/// The `sequenceId` of a reliable-protocol frame.
pub fn sequence_id(frame: &[u8]) -> Option<u64> {
    let at = find(frame, b"\"sequenceId\":")? + 13;
    let digits = frame[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&frame[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
