//! Rotation under load: many reliable clients receive a steady stream while the primary, the
//! secondary and the salt are regenerated again and again; the publisher always signs with the
//! key that is not being replaced. Counts dropped connections, lost messages and publish errors.

use crate::scenarios::Report;
use crate::target::Target;
use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

pub struct RotationOptions {
    pub connections: usize,
    pub seconds: f64,
    pub rate: f64,
    pub admin_url: String,
    pub admin_token: String,
}

struct Admin {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Admin {
    async fn keys(&self) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(format!("{}/admin/keys", self.url))
            .bearer_auth(&self.token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    async fn regenerate(&self, key_type: &str) -> anyhow::Result<Value> {
        Ok(self
            .http
            .post(format!("{}/admin/keys/regenerate", self.url))
            .bearer_auth(&self.token)
            .json(&json!({ "keyType": key_type }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }
}

pub async fn rotation(target: Arc<Target>, options: RotationOptions) -> anyhow::Result<Report> {
    let Target::Hubbub { endpoint, hub, .. } = &*target else {
        anyhow::bail!("rotation runs against Hubbub only");
    };
    let admin = Admin {
        http: reqwest::Client::new(),
        url: options.admin_url.trim_end_matches('/').to_string(),
        token: options.admin_token.clone(),
    };
    let keys = admin
        .keys()
        .await
        .context("reading the keys through the admin API")?;
    let publisher_key = Arc::new(RwLock::new(
        keys["secondaryKey"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    ));

    // Reliable clients in group g.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let urls: Vec<String> = (0..options.connections)
        .map(|i| target.client_url(&format!("r{i}"), &["g"], &[]))
        .collect();
    let clients: Vec<_> = futures_util::stream::iter(urls)
        .map(|url| async move {
            let mut request = url.into_client_request()?;
            request.headers_mut().insert(
                "sec-websocket-protocol",
                "json.reliable.webpubsub.azure.v1".parse()?,
            );
            let (client, _) =
                tokio_tungstenite::connect_async_with_config(request, Some(config), false).await?;
            anyhow::Ok(client)
        })
        .buffer_unordered(128)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let delivered = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let (delivered, dropped, mut stopped) = (Arc::clone(&delivered), Arc::clone(&dropped), stopped.clone());
            tokio::spawn(async move {
                let mut highest = 0u64;
                let mut acked = 0u64;
                let mut tick = tokio::time::interval(Duration::from_millis(500));
                loop {
                    tokio::select! {
                        frame = client.next() => match frame {
                            Some(Ok(Message::Text(text))) => {
                                let Ok(message) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                                if let Some(sequence) = message["sequenceId"].as_u64() {
                                    if sequence > highest {
                                        highest = sequence;
                                        delivered.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                            }
                            Some(Ok(_)) => {}
                            _ => {
                                dropped.fetch_add(1, Ordering::Relaxed);
                                return;
                            }
                        },
                        _ = tick.tick() => {
                            if highest > acked {
                                acked = highest;
                                let ack = json!({"type": "sequenceAck", "sequenceId": highest}).to_string();
                                if client.send(Message::Text(ack.into())).await.is_err() {
                                    dropped.fetch_add(1, Ordering::Relaxed);
                                    return;
                                }
                            }
                        }
                        _ = stopped.changed() => return,
                    }
                }
            })
        })
        .collect();

    // The publisher: a steady rate, signing with whichever key is not being replaced.
    let published = Arc::new(AtomicU64::new(0));
    let publish_errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(options.seconds);
    let url = format!("{endpoint}/api/hubs/{hub}/groups/g/:send?api-version=2024-12-01");
    let publisher = {
        let (key, published, errors, http, url) = (
            Arc::clone(&publisher_key),
            Arc::clone(&published),
            Arc::clone(&publish_errors),
            reqwest::Client::new(),
            url.clone(),
        );
        let interval = Duration::from_secs_f64(1.0 / options.rate.max(1.0));
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            while Instant::now() < deadline {
                ticker.tick().await;
                let key = key.read().map(|k| k.clone()).unwrap_or_default();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or_default();
                let claims = json!({"aud": url, "iat": now, "exp": now + 600});
                let token = hubbub_proto::jwt::sign(
                    claims.as_object().expect("object"),
                    key.as_bytes(),
                    None,
                );
                let status = http
                    .post(&url)
                    .bearer_auth(token)
                    .header("content-type", "text/plain")
                    .body("tick")
                    .send()
                    .await
                    .map(|r| r.status().as_u16());
                if matches!(status, Ok(202)) {
                    published.fetch_add(1, Ordering::Relaxed);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    // The rotations: primary (publisher on secondary), secondary (publisher on the new primary),
    // then the salt; again and again.
    let mut regenerations: HashMap<&str, u64> = HashMap::new();
    while Instant::now() + Duration::from_millis(600) < deadline {
        let keys = admin.regenerate("Primary").await?;
        *regenerations.entry("primary").or_default() += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
        if let Ok(mut key) = publisher_key.write() {
            *key = keys["primaryKey"].as_str().unwrap_or_default().to_string();
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        let keys = admin.regenerate("Secondary").await?;
        *regenerations.entry("secondary").or_default() += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
        if let Ok(mut key) = publisher_key.write() {
            *key = keys["secondaryKey"]
                .as_str()
                .unwrap_or_default()
                .to_string();
        }
        admin.regenerate("Salt").await?;
        *regenerations.entry("salt").or_default() += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let _ = publisher.await;
    let expected = published.load(Ordering::Relaxed) * options.connections as u64;
    let drain = Instant::now() + Duration::from_secs(10);
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(true);
    for reader in readers {
        let _ = reader.await;
    }
    let mut report = Report::new("rotation", &target);
    let delivered = delivered.load(Ordering::Relaxed);
    report.put("connections", json!(options.connections));
    report.put("regenerations", json!(regenerations));
    report.put("published", json!(published.load(Ordering::Relaxed)));
    report.put(
        "publish_errors",
        json!(publish_errors.load(Ordering::Relaxed)),
    );
    report.put("expected_deliveries", json!(expected));
    report.put("delivered", json!(delivered));
    report.put("lost", json!(expected.saturating_sub(delivered)));
    report.put(
        "dropped_connections",
        json!(dropped.load(Ordering::Relaxed)),
    );
    Ok(report)
}
