//! The NATS connection as the nodes use it for messages between them: everything published is
//! signed with the cluster secret, everything received is checked before it is read (see
//! [`seal`](super::seal)). Refusals are counted and logged at most once per [`LOG_EVERY`].

use super::seal::{ClusterSecret, Refusal};
use bytes::Bytes;
use futures_util::StreamExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The least time between two log lines about refused messages or values.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Messages and stored values refused, for `/metrics`.
#[derive(Debug, Default)]
pub struct Refused {
    pub messages: AtomicU64,
    pub values: AtomicU64,
    last_log: std::sync::Mutex<Option<Instant>>,
}

impl Refused {
    /// Counts a refusal and logs it unless one was logged within [`LOG_EVERY`].
    pub fn count(&self, what: &'static str, refusal: Refusal) {
        let counter = if what == "message" {
            &self.messages
        } else {
            &self.values
        };
        let total = counter.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_log.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(
                what,
                why = refusal.as_str(),
                total,
                "refused something from NATS that no node with this cluster secret wrote: check that every node has the same cluster secret, and who else can publish on the cluster's subjects"
            );
        }
    }
}

/// A NATS client that signs what it sends and checks what it receives.
#[derive(Clone)]
pub struct Wire {
    pub client: async_nats::Client,
    pub secret: Arc<ClusterSecret>,
    pub refused: Arc<Refused>,
}

impl Wire {
    /// Publishes `payload` on `subject`, signed.
    pub async fn publish(&self, subject: String, payload: Bytes) -> Result<(), String> {
        let headers = self.secret.sign(&subject, None, &payload);
        self.client
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(|e| e.to_string())
    }

    /// Publishes a request with its reply subject, both covered by the signature.
    pub async fn publish_request(
        &self,
        subject: String,
        reply: String,
        payload: Bytes,
    ) -> Result<(), String> {
        let headers = self.secret.sign(&subject, Some(&reply), &payload);
        self.client
            .publish_with_reply_and_headers(subject, reply, headers, payload)
            .await
            .map_err(|e| e.to_string())
    }

    /// Whether a received message is authentic and fresh; a refusal is counted.
    pub fn check(&self, message: &async_nats::Message) -> bool {
        match self.secret.verify(message) {
            Ok(()) => true,
            Err(refusal) => {
                self.refused.count("message", refusal);
                false
            }
        }
    }

    /// The plaintext of a value this cluster sealed under `context`; a refusal is counted.
    pub fn open(&self, context: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        match self.secret.open(context, sealed) {
            Ok(plain) => Some(plain),
            Err(refusal) => {
                self.refused.count("value", refusal);
                None
            }
        }
    }

    /// Sends a request to `subject` and waits at most `limit` for the first authentic answer.
    pub async fn request(&self, subject: String, payload: Bytes, limit: Duration) -> Option<Bytes> {
        let inbox = self.client.new_inbox();
        let mut replies = self.client.subscribe(inbox.clone()).await.ok()?;
        self.publish_request(subject, inbox, payload).await.ok()?;
        let wait = async {
            while let Some(reply) = replies.next().await {
                if reply.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
                    return None;
                }
                if self.check(&reply) {
                    return Some(reply.payload);
                }
            }
            None
        };
        tokio::time::timeout(limit, wait).await.ok().flatten()
    }
}
