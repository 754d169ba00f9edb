//! Key events in the cluster: the node that makes a change publishes its audit entry to the
//! `hubbub_audit` stream; every node copies the stream, in order and exactly once, into its own
//! audit log (the SQLite table the portal, the CLI and `/metrics` read), remembering the last
//! stream sequence it copied. Events are sealed with the cluster secret: an event that no node
//! wrote is refused, never copied.

use super::ClusterError;
use crate::clock::UnixMillis;
use crate::store::{AuditEntry, Store};
use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use hubbub_proto::keys::KeySlot;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const STREAM: &str = "hubbub_audit";
pub const SUBJECT: &str = "hubbub.audit";
/// What a sealed event is bound to.
const SEAL_CONTEXT: &str = "hubbub_audit";

pub(crate) async fn open_stream(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<stream::Stream, String> {
    if let Ok(stream) = js.get_stream(STREAM).await {
        return Ok(stream);
    }
    let created = js
        .create_stream(stream::Config {
            name: STREAM.into(),
            description: Some("Hubbub key events (append-only)".into()),
            subjects: vec![SUBJECT.into()],
            num_replicas: replicas,
            // Entries are never removed through the API.
            deny_delete: true,
            deny_purge: true,
            ..Default::default()
        })
        .await;
    match created {
        Ok(stream) => Ok(stream),
        Err(e) => js.get_stream(STREAM).await.map_err(|_| e.to_string()),
    }
}

/// One event as it travels on the stream. Never carries key material.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditDoc {
    at: UnixMillis,
    event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    slot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    old_version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    new_version: Option<u64>,
    actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    /// The node that made the change.
    node: String,
}

pub(crate) struct AuditLog {
    js: jetstream::Context,
    node_id: String,
    wire: super::wire::Wire,
}

impl AuditLog {
    pub(crate) fn new(js: jetstream::Context, node_id: String, wire: super::wire::Wire) -> Self {
        Self { js, node_id, wire }
    }

    /// Publishes an event and waits for the stream to store it. `dedup` names the event so that
    /// JetStream keeps one copy when several nodes record the same fact.
    pub(crate) async fn record(
        &self,
        entry: &AuditEntry<'_>,
        dedup: Option<String>,
    ) -> Result<(), ClusterError> {
        let doc = AuditDoc {
            at: entry.at,
            event: entry.event.into(),
            slot: entry.slot.map(|s| s.as_str().to_string()),
            old_version: entry.old_version,
            new_version: entry.new_version,
            actor: entry.actor.into(),
            source: entry.source.map(str::to_owned),
            detail: entry.detail.map(str::to_owned),
            node: self.node_id.clone(),
        };
        let payload = self
            .wire
            .secret
            .seal(SEAL_CONTEXT, &serde_json::to_vec(&doc).unwrap_or_default());
        let mut headers = async_nats::HeaderMap::new();
        if let Some(id) = dedup {
            headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
        }
        let ack = self
            .js
            .publish_with_headers(SUBJECT, headers, payload)
            .await
            .map_err(|e| ClusterError::Failed(format!("audit event not published: {e}")))?;
        ack.await
            .map_err(|e| ClusterError::Failed(format!("audit event not stored: {e}")))?;
        Ok(())
    }
}

/// Copies the stream into the local audit log until shutdown, resuming after the last copied
/// sequence (kept in the same transaction as each copied event).
pub(crate) async fn mirror(
    js: jetstream::Context,
    replicas: usize,
    wire: super::wire::Wire,
    store: Arc<Store>,
    mut reconnects: tokio::sync::watch::Receiver<u64>,
    shutdown: CancellationToken,
) {
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        // Gets the stream, or creates it again if JetStream lost it.
        let mut stream = match open_stream(&js, replicas).await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "cannot open the audit stream yet");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let created = match stream.info().await {
            Ok(info) => i64::try_from(info.created.unix_timestamp_nanos()).unwrap_or(i64::MAX),
            Err(_) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let position = {
            let store = Arc::clone(&store);
            tokio::task::spawn_blocking(move || store.audit_mirror_position(created)).await
        };
        let Ok(Ok(last)) = position else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let consumer = stream
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: wire.client.new_inbox(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: last + 1,
                },
                ..Default::default()
            })
            .await;
        let messages = match consumer {
            Ok(consumer) => consumer.messages().await,
            Err(e) => {
                tracing::debug!(error = %e, "cannot follow the audit stream yet");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let mut messages = match messages {
            Ok(messages) => messages,
            Err(e) => {
                tracing::debug!(error = %e, "cannot follow the audit stream yet");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => return,
                // After a reconnect, start over: the stream may be a new one.
                changed = reconnects.changed() => match changed {
                    Ok(()) => break,
                    Err(_) => return,
                },
                next = messages.next() => next,
            };
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "audit stream interrupted");
                    break;
                }
                None => break,
            };
            let Ok(info) = message.info() else { continue };
            let seq = info.stream_sequence;
            let opened = wire.open(SEAL_CONTEXT, &message.payload);
            let doc: AuditDoc = match opened.map(|plain| serde_json::from_slice(&plain)) {
                Some(Ok(doc)) => doc,
                // Refused (counted and logged): not copied.
                None => continue,
                Some(Err(_)) => {
                    tracing::warn!(seq, "skipped an unreadable audit event");
                    continue;
                }
            };
            let store = Arc::clone(&store);
            let copied = tokio::task::spawn_blocking(move || {
                let slot = doc.slot.as_deref().and_then(|s| s.parse::<KeySlot>().ok());
                let detail = match &doc.detail {
                    Some(d) => format!("{d} (node {})", doc.node),
                    None => format!("node {}", doc.node),
                };
                store.mirror_audit(
                    &AuditEntry {
                        at: doc.at,
                        event: &doc.event,
                        slot,
                        old_version: doc.old_version,
                        new_version: doc.new_version,
                        actor: &doc.actor,
                        source: doc.source.as_deref(),
                        detail: Some(&detail),
                    },
                    seq,
                )
            })
            .await;
            if !matches!(copied, Ok(Ok(()))) {
                tracing::warn!(seq, "could not copy an audit event; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                break;
            }
        }
    }
}
