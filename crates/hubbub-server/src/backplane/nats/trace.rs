//! The cluster's live trace. A node with a listener that wants every node's events asks the
//! others on `hubbub.trace.ask` every few seconds; a node asked within the last
//! [`crate::trace::FORWARD_FOR_MS`] publishes its events on `hubbub.trace.e`; every node hands
//! the events it receives to its cluster listeners. Both subjects are signed like every message
//! between nodes. Forwarded events wait in a bounded queue: when NATS is slower than the events,
//! the excess is dropped, never waited for.

use super::wire::Wire;
use crate::trace::Tracer;
use bytes::Bytes;
use futures_util::StreamExt;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

const ASK: &str = "hubbub.trace.ask";
const EVENTS: &str = "hubbub.trace.e";
/// Events waiting for NATS before more are dropped.
const QUEUE: usize = 4096;

/// Connects this node's tracer to the others' until `shutdown`.
pub async fn follow(wire: Wire, node: Arc<str>, tracer: Tracer, shutdown: CancellationToken) {
    let (queue, mut queued) = tokio::sync::mpsc::channel::<String>(QUEUE);
    tracer.join_cluster(
        Arc::clone(&node),
        Box::new(move |json| {
            // Full: NATS is behind; this event is not forwarded.
            let _ = queue.try_send(json);
        }),
    );
    let (asks, events) = match (
        wire.client.subscribe(ASK).await,
        wire.client.subscribe(EVENTS).await,
    ) {
        (Ok(asks), Ok(events)) => (asks, events),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "the cluster trace is off: could not subscribe");
            return;
        }
    };
    let mut asks = asks.fuse();
    let mut events = events.fuse();
    let mut every = tokio::time::interval(crate::trace::ASK_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {
                if tracer.wants_cluster() {
                    let _ = wire.publish(ASK.into(), Bytes::copy_from_slice(node.as_bytes())).await;
                }
            }
            () = tracer.cluster_listener_arrived() => {
                let _ = wire.publish(ASK.into(), Bytes::copy_from_slice(node.as_bytes())).await;
            }
            Some(ask) = asks.next() => {
                if wire.check(&ask) && ask.payload.as_ref() != node.as_bytes() {
                    tracer.wanted_elsewhere();
                }
            }
            Some(event) = events.next() => {
                if wire.check(&event) {
                    tracer.received(&event.payload);
                }
            }
            Some(json) = queued.recv() => {
                let _ = wire.publish(EVENTS.into(), Bytes::from(json)).await;
            }
        }
    }
}
