//! Messages between nodes. The node that takes a send delivers it to its own connections and
//! publishes it once on a NATS subject of the hub and target; the other nodes deliver it to
//! theirs. Subjects carry hashes of hub, group and user names (names may hold `.`, `*`, `>` or
//! spaces, which NATS subjects cannot):
//!
//! The envelope is `[1][header length: u32 BE][header JSON][payload]`: the payload travels as
//! received, and each node encodes it once for its own connections.

use super::routing::{group_subject, hub_subject, node_subject, user_subject, Kind, Moved};
use crate::backplane::Node;
use crate::dataplane::delivery::{self, Delivered, Delivery, Target};
use crate::dataplane::filter::Filter;
use crate::dataplane::hub::{Hubs, Interest};
use crate::dataplane::message::Outgoing;
use crate::dataplane::ops::{Answer, Ask, Question};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use hubbub_proto::client_protocol::{DataType, GroupStateItem, Metadata, StreamInfo};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Messages waiting to be handed to NATS; beyond this a send is not forwarded (and counted).
const OUTBOX_CAPACITY: usize = 16 * 1024;
const ENVELOPE_VERSION: u8 = 1;
/// How long a join waits for its subscription before answering anyway (NATS down).
pub const INTEREST_WAIT: Duration = Duration::from_secs(2);
/// Interest changes applied before one flush to the server.
const INTEREST_BATCH: usize = 1024;

/// The subject (all kinds) an interest change is about, and whether it is wanted now.
fn interest_subject(interest: &Interest) -> (String, bool) {
    match interest {
        Interest::Hub(hub) => (hub_subject(hub, Kind::Any), true),
        Interest::Group(hub, group, on) => (group_subject(hub, group, Kind::Any), *on),
        Interest::User(hub, user, on) => (user_subject(hub, user, Kind::Any), *on),
    }
}

/// Where hubs report interest changes. Each change gets a sequence number; [`settling`]
/// (Self::settling) waits until the server has every subscription up to the latest.
#[derive(Clone)]
pub struct InterestSink(Arc<SinkInner>);

struct SinkInner {
    /// The last sequence number given out, and the channel (sent under one lock, so the manager
    /// sees changes in sequence order).
    tx: Mutex<(u64, mpsc::UnboundedSender<(u64, Interest)>)>,
    done: watch::Receiver<u64>,
}

impl std::fmt::Debug for InterestSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InterestSink")
    }
}

impl InterestSink {
    pub fn notify(&self, change: Interest) {
        let mut tx = self.0.tx.lock().unwrap_or_else(|p| p.into_inner());
        tx.0 += 1;
        let seq = tx.0;
        let _ = tx.1.send((seq, change));
    }

    /// The sequence number of the latest change.
    pub fn latest(&self) -> u64 {
        self.0.tx.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    /// Waits (at most [`INTEREST_WAIT`]) until the subscriptions of every change so far are in
    /// place on the server (on timeout, NATS is down: the caller goes on).
    pub fn settling(&self) -> BoxFuture<'static, ()> {
        let seq = self.latest();
        let mut done = self.0.done.clone();
        Box::pin(async move {
            let _ = tokio::time::timeout(INTEREST_WAIT, done.wait_for(|d| *d >= seq)).await;
        })
    }
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Header {
    hub: String,
    target: Target,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    excluded: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    filter: Option<String>,
    data_type: String,
    /// The group of a group message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from_user_id: Option<String>,
    /// The client connection that sent it (for `noEcho`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sender: Option<String>,
    #[serde(default)]
    no_echo: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ttl_ms: Option<u64>,
    /// An MQTT QoS 0 publish.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    at_most_once: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    metadata: Metadata,
    /// A group stream's fragment or end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stream: Option<StreamInfo>,
    /// Not data: a change of the group's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group_state: Option<Vec<GroupStateItem>>,
}

fn encode(header: &Header, data: &Bytes) -> Bytes {
    let json = serde_json::to_vec(header).unwrap_or_default();
    let mut out = BytesMut::with_capacity(5 + json.len() + data.len());
    out.put_u8(ENVELOPE_VERSION);
    out.put_u32(json.len() as u32);
    out.put_slice(&json);
    out.put_slice(data);
    out.freeze()
}

fn decode(payload: &Bytes) -> Option<(Header, Bytes)> {
    if payload.first() != Some(&ENVELOPE_VERSION) || payload.len() < 5 {
        return None;
    }
    let len = u32::from_be_bytes(payload[1..5].try_into().ok()?) as usize;
    let end = 5usize.checked_add(len)?;
    if end > payload.len() {
        return None;
    }
    let header = serde_json::from_slice(&payload[5..end]).ok()?;
    Some((header, payload.slice(end..)))
}

fn data_type(name: &str) -> Option<DataType> {
    match name {
        "text" => Some(DataType::Text),
        "json" => Some(DataType::Json),
        "binary" => Some(DataType::Binary),
        "protobuf" => Some(DataType::Protobuf),
        _ => None,
    }
}

/// Counters of the bus, for `/metrics`.
#[derive(Debug, Default)]
pub struct BusStats {
    pub published: AtomicU64,
    pub received: AtomicU64,
    /// The bytes of the messages published and received (NATS payloads).
    pub published_bytes: AtomicU64,
    pub received_bytes: AtomicU64,
    /// Not forwarded: the outbox to NATS was full, or the message was larger than NATS takes.
    pub dropped: AtomicU64,
}

/// What the subscription readers need: the hubs for messages, the node for questions.
struct Dispatch {
    node_id: Arc<str>,
    hubs: Arc<Hubs>,
    stats: Arc<BusStats>,
    wire: super::wire::Wire,
    /// Set once the node is served; cleared at shutdown (it holds the cluster itself).
    node: std::sync::RwLock<Option<Arc<dyn Node>>>,
    /// Reliable sessions this node handed over, and where they went.
    moved: Arc<Moved>,
    /// The largest message the NATS server takes.
    max_payload: usize,
}

impl Dispatch {
    async fn on_message(&self, message: async_nats::Message) {
        if !self.wire.check(&message) {
            return;
        }
        match message.subject.as_str().rsplit('.').next() {
            Some("m") => {
                self.stats.received.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .received_bytes
                    .fetch_add(message.payload.len() as u64, Ordering::Relaxed);
                if let Some(id) = deliver(&self.hubs, &message.payload) {
                    // A connection that is not here: if its session moved on, so does this.
                    if let Some(node) = self.moved.get(&id).filter(|n| **n != *self.node_id) {
                        let subject = node_subject(&node, Kind::Message);
                        if let Err(e) = self.wire.publish(subject, message.payload).await {
                            tracing::debug!(error = %e, "a message could not be passed on");
                        }
                    }
                }
            }
            Some("q") => {
                let node = self.node.read().unwrap_or_else(|p| p.into_inner()).clone();
                let Some(node) = node else {
                    return;
                };
                let Ok(question) = serde_json::from_slice::<Question>(&message.payload) else {
                    tracing::warn!("ignored a question from the cluster that is not one");
                    return;
                };
                let mut answer = match &question.ask {
                    Ask::Forget { id } => {
                        self.moved.forget(id);
                        Answer::default()
                    }
                    Ask::Handover { id, to } => super::handover::give(
                        &*node,
                        &self.moved,
                        self.max_payload,
                        &question.hub,
                        id,
                        to,
                    ),
                    _ => node.answer(&question).await,
                };
                let Some(reply) = message.reply else {
                    return;
                };
                if let Some(id) = question.ask.connection_id().filter(|_| !answer.ok) {
                    // A connection that is not here: if its session moved on, ask there.
                    if let Some(node) = self.moved.get(id).filter(|n| **n != *self.node_id) {
                        if let Some(relayed) =
                            super::ask::request(&self.wire, &node, &question).await
                        {
                            if let Ask::Handover { to, .. } = &question.ask {
                                if relayed.session.is_some() {
                                    self.moved.set(id, to);
                                }
                            }
                            answer = relayed;
                        }
                    }
                }
                let payload = serde_json::to_vec(&answer).unwrap_or_default();
                if let Err(e) = self.wire.publish(reply.to_string(), payload.into()).await {
                    tracing::debug!(error = %e, "an answer could not be sent");
                }
            }
            _ => {}
        }
    }
}

pub struct Bus {
    dispatch: Arc<Dispatch>,
    outbox: mpsc::Sender<(String, Bytes)>,
    sink: InterestSink,
    max_payload: usize,
    pub stats: Arc<BusStats>,
}

impl Bus {
    /// Subscribes to this node's own subject and starts the publisher and the interest manager;
    /// from now on the hubs report interest here.
    pub async fn start(
        wire: super::wire::Wire,
        node_id: Arc<str>,
        hubs: Arc<Hubs>,
        moved: Arc<Moved>,
        shutdown: CancellationToken,
    ) -> Result<Self, String> {
        let client = wire.client.clone();
        let stats = Arc::new(BusStats::default());
        let dispatch = Arc::new(Dispatch {
            node_id: Arc::clone(&node_id),
            moved,
            hubs: Arc::clone(&hubs),
            stats: Arc::clone(&stats),
            wire: wire.clone(),
            node: std::sync::RwLock::new(None),
            max_payload: client.server_info().max_payload,
        });
        let own = client
            .subscribe(node_subject(&node_id, Kind::Any))
            .await
            .map_err(|e| e.to_string())?;
        let reader = tokio::spawn(read(own, Arc::clone(&dispatch)));
        let (outbox, queued) = mpsc::channel(OUTBOX_CAPACITY);
        tokio::spawn(publish(wire, queued, shutdown.clone()));
        let (tx, changes) = mpsc::unbounded_channel();
        let (done_tx, done) = watch::channel(0);
        let sink = InterestSink(Arc::new(SinkInner {
            tx: Mutex::new((0, tx)),
            done,
        }));
        tokio::spawn(manage(
            client.clone(),
            changes,
            done_tx,
            Arc::clone(&dispatch),
            shutdown.clone(),
        ));
        let for_shutdown = Arc::clone(&dispatch);
        tokio::spawn(async move {
            shutdown.cancelled().await;
            reader.abort();
            *for_shutdown.node.write().unwrap_or_else(|p| p.into_inner()) = None;
        });
        let reporter = sink.clone();
        hubs.set_interest(Arc::new(move |interest| reporter.notify(interest)));
        Ok(Self {
            dispatch,
            outbox,
            sink,
            max_payload: client.server_info().max_payload,
            stats,
        })
    }

    /// Waits (bounded) until the subscriptions of this node's interest so far are in place.
    pub fn settling(&self) -> BoxFuture<'static, ()> {
        self.sink.settling()
    }

    /// Lets this node answer questions from the others (from now until shutdown).
    pub fn serve(&self, node: Arc<dyn Node>) {
        *self
            .dispatch
            .node
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(node);
    }

    /// Forwards a delivery (already made to this node's connections) to the other nodes.
    /// Never waits: when the outbox to NATS is full the message is not forwarded.
    pub fn publish(&self, delivery: &Delivery) {
        let hub = delivery.hub.as_str();
        let subject = match &delivery.target {
            Target::All => hub_subject(hub, Kind::Message),
            Target::Group(group) => group_subject(hub, group, Kind::Message),
            Target::User(user) => user_subject(hub, user, Kind::Message),
            Target::Connection(id) => {
                let own = &*self.dispatch.node_id;
                let node = match super::Cluster::node_of(id) {
                    Some(node) if node != own => Some(node.to_string()),
                    // Ours: delivered already, unless its session moved to another node.
                    _ => self.dispatch.moved.get(id).filter(|node| node != own),
                };
                match node {
                    Some(node) => node_subject(&node, Kind::Message),
                    // An id naming no node (an MQTT client id), not here: the hub's nodes.
                    None if super::Cluster::node_of(id).is_none() => {
                        let here = self.dispatch.hubs.get(hub);
                        if here.is_some_and(|h| h.connection(id).is_some()) {
                            return;
                        }
                        hub_subject(hub, Kind::Message)
                    }
                    None => return,
                }
            }
        };
        let message = &delivery.message;
        let header = Header {
            hub: hub.to_string(),
            target: delivery.target.clone(),
            excluded: delivery.excluded.clone(),
            filter: delivery.filter_text().map(str::to_owned),
            data_type: message.data_type().as_str().into(),
            group: message.source_group().map(|g| g.to_string()),
            from_user_id: message.from_user_id().map(|u| u.to_string()),
            sender: message.sender.as_ref().map(|s| s.to_string()),
            no_echo: message.no_echo,
            at_most_once: message.at_most_once,
            ttl_ms: message
                .ttl_remaining()
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            metadata: message.metadata().to_vec(),
            stream: message.stream().cloned(),
            group_state: message.group_state().map(<[GroupStateItem]>::to_vec),
        };
        let payload = encode(&header, message.data());
        if payload.len() > self.max_payload {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                bytes = payload.len(),
                max_payload = self.max_payload,
                "a message is larger than NATS's max_payload; it reached this node's clients only"
            );
            return;
        }
        let bytes = payload.len() as u64;
        match self.outbox.try_send((subject, payload)) {
            Ok(()) => {
                self.stats.published.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .published_bytes
                    .fetch_add(bytes, Ordering::Relaxed);
            }
            Err(_) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("the outbox to NATS is full; a message reached this node only");
            }
        }
    }
}

/// Hands queued messages to the NATS client, in order, signed.
async fn publish(
    wire: super::wire::Wire,
    mut queued: mpsc::Receiver<(String, Bytes)>,
    shutdown: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => return,
            next = queued.recv() => next,
        };
        let Some((subject, payload)) = next else {
            return;
        };
        if let Err(e) = wire.publish(subject, payload).await {
            tracing::debug!(error = %e, "a message could not be handed to NATS");
        }
    }
}

/// Handles what arrives on one subscription, in order: messages go to this node's connections,
/// questions are answered.
async fn read(mut subscriber: async_nats::Subscriber, dispatch: Arc<Dispatch>) {
    while let Some(message) = subscriber.next().await {
        dispatch.on_message(message).await;
    }
}

/// Delivers one forwarded message to the local connections it targets. Returns the connection
/// id of a message for one connection that is not here.
fn deliver(hubs: &Hubs, payload: &Bytes) -> Option<String> {
    let Some((header, data)) = decode(payload) else {
        tracing::warn!("ignored a message from the cluster that is not a Hubbub envelope");
        return None;
    };
    let kind = data_type(&header.data_type)?;
    let mut message = match (header.group, header.group_state) {
        (Some(group), Some(items)) => Outgoing::group_state_update(group.into(), items),
        (Some(group), None) => Outgoing::group(
            group.into(),
            header.from_user_id.map(Into::into),
            kind,
            data,
        ),
        (None, _) => Outgoing::server(kind, data),
    };
    message = message.with_metadata(header.metadata);
    if let Some(stream) = header.stream {
        message = message.in_stream(stream);
    }
    if let Some(sender) = header.sender {
        message = message.with_sender(sender.into(), header.no_echo);
    }
    if let Some(ms) = header.ttl_ms {
        message = message.with_ttl(Duration::from_millis(ms));
    }
    message.at_most_once = header.at_most_once;
    let filter = match header.filter {
        Some(text) => Some((Filter::parse(&text).ok()?, text)),
        None => None,
    };
    let delivery = Delivery {
        hub: header.hub,
        target: header.target,
        excluded: header.excluded,
        filter,
        message,
    };
    match delivery::deliver(hubs, &delivery) {
        Delivered::NotHere => delivery.target.connection_id().map(str::to_owned),
        Delivered::Here(_) => None,
    }
}

/// Turns interest changes into subscriptions, in order; after each batch, one round trip to the
/// server, then `done` says how far the server has them.
async fn manage(
    client: async_nats::Client,
    mut changes: mpsc::UnboundedReceiver<(u64, Interest)>,
    done: watch::Sender<u64>,
    dispatch: Arc<Dispatch>,
    shutdown: CancellationToken,
) {
    let mut subscriptions: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => break,
            first = changes.recv() => first,
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        while batch.len() < INTEREST_BATCH {
            match changes.try_recv() {
                Ok(change) => batch.push(change),
                Err(_) => break,
            }
        }
        let mut last = 0;
        for (seq, change) in batch {
            last = seq;
            let (subject, on) = interest_subject(&change);
            if on {
                if subscriptions.contains_key(&subject) {
                    continue;
                }
                match client.subscribe(subject.clone()).await {
                    Ok(subscriber) => {
                        let reader = tokio::spawn(read(subscriber, Arc::clone(&dispatch)));
                        subscriptions.insert(subject, reader);
                    }
                    Err(e) => tracing::warn!(error = %e, "could not subscribe to a NATS subject"),
                }
            } else if let Some(reader) = subscriptions.remove(&subject) {
                // Dropping the subscriber unsubscribes.
                reader.abort();
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
        done.send_replace(last);
    }
    for (_, reader) in subscriptions {
        reader.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_round_trips_and_refuses_garbage() {
        let header = Header {
            hub: "chat".into(),
            target: Target::Group("room 1".into()),
            excluded: vec!["c1".into()],
            filter: Some("userId eq 'u'".into()),
            data_type: "binary".into(),
            group: Some("room 1".into()),
            from_user_id: Some("u".into()),
            sender: Some("n1-ab".into()),
            no_echo: true,
            ttl_ms: Some(5_000),
            at_most_once: true,
            metadata: vec![("trace".into(), "t-1".into())],
            stream: Some(StreamInfo {
                stream_id: "s".into(),
                stream_sequence_id: 3,
                end_of_stream: true,
                error: None,
            }),
            group_state: None,
        };
        let data = Bytes::from_static(&[0, 1, 2, 255]);
        let (back, payload) = decode(&encode(&header, &data)).unwrap();
        assert_eq!(back, header);
        assert_eq!(payload, data);
        assert!(decode(&Bytes::from_static(b"hello")).is_none());
        assert!(decode(&Bytes::from_static(&[1, 0, 0, 0, 9, b'{'])).is_none());
    }
}
