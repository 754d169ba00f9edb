//! User events on their way to the app server: one worker per connection, one event at a time.

use super::*;

/// User events of one connection waiting for the app server, sent one at a time in order.
pub(super) enum Job {
    Event {
        event: String,
        ack_id: Option<u64>,
        data: hubbub_proto::client_protocol::Data,
        metadata: Metadata,
    },
    Invoke {
        invocation_id: String,
        event: String,
        data: hubbub_proto::client_protocol::Data,
        metadata: Metadata,
    },
    /// A simple client's frame in `sendEvent` mode: the `message` event.
    Frame { data_type: DataType, data: Bytes },
    /// An MQTT client's PUBLISH to `$webpubsub/server/events/{event}`: answered on
    /// `…/{event}/succeeded` or `…/failed`.
    Mqtt {
        event: String,
        data: hubbub_proto::client_protocol::Data,
        metadata: Metadata,
    },
}

/// A connection's queue of user events; its worker task starts with the first event.
#[derive(Default)]
pub(super) struct EventQueue {
    sender: Option<tokio::sync::mpsc::Sender<Job>>,
}

/// Whether the hub has an event handler for this user event.
pub(super) fn has_handler(state: &AppState, hub: &Hub, event: &str) -> bool {
    state
        .hub_settings
        .get(&hub.name)
        .user_handler(event)
        .is_some()
}

/// A client's group message: to the group's members here and on the other nodes.
pub(super) fn send_to_group(state: &AppState, hub: &Hub, group: &str, message: Outgoing) {
    hub.traffic.received_client();
    let target = Target::Group(group.to_string());
    state.send(&Delivery::new(&hub.name, target, message));
}

/// Acknowledges a join once the other nodes send this node the group's messages (at once on a
/// single node), so a send right after the ack reaches the client whichever node takes it.
pub(super) fn ack_join(
    state: &AppState,
    connection: &Arc<Connection>,
    ack_id: Option<u64>,
    result: Result<(), (&'static str, String)>,
) {
    match (state.backplane.settling(), ack_id, &result) {
        (Some(settling), Some(_), Ok(())) => {
            let connection = Arc::clone(connection);
            tokio::spawn(async move {
                settling.await;
                ack(&connection, ack_id, Ok(()));
            });
        }
        _ => ack(connection, ack_id, result),
    }
}

impl EventQueue {
    /// Queues a job, starting the connection's event worker on first use; gives the job back
    /// (and counts it) when the queue holds `event_queue` jobs already.
    pub(super) fn push(
        &mut self,
        state: &AppState,
        connection: &Arc<Connection>,
        job: Job,
    ) -> Result<(), Job> {
        let sender = self.sender.get_or_insert_with(|| {
            let (sender, receiver) = tokio::sync::mpsc::channel(state.hubs.limits().event_queue);
            state
                .sockets
                .spawn(run_events(receiver, state.clone(), Arc::clone(connection)));
            sender
        });
        let queued = sender.try_send(job);
        if queued.is_ok() {
            state.hubs.traffic_of(&connection.hub).received_client();
        }
        queued.map_err(|e| {
            state
                .hubs
                .limit_counts()
                .event_queue
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            e.into_inner()
        })
    }
}

pub(super) async fn run_events(
    mut jobs: tokio::sync::mpsc::Receiver<Job>,
    state: AppState,
    connection: Arc<Connection>,
) {
    while let Some(job) = jobs.recv().await {
        let settings = state.hub_settings.get(&connection.hub);
        let ctx = EventContext::of(&connection);
        let (event, data_type, data, metadata) = match &job {
            Job::Event {
                event,
                data,
                metadata,
                ..
            }
            | Job::Invoke {
                event,
                data,
                metadata,
                ..
            }
            | Job::Mqtt {
                event,
                data,
                metadata,
            } => (
                event.as_str(),
                data.data_type,
                data.bytes.clone(),
                metadata.as_slice(),
            ),
            Job::Frame { data_type, data } => ("message", *data_type, data.to_vec(), &[][..]),
        };
        let outcome = state
            .upstream
            .user_event(&settings, &ctx, event, data_type, data, metadata)
            .await
            .unwrap_or_else(|| {
                EventOutcome::Failed(format!(
                    "no event handler is configured for event '{event}'"
                ))
            });
        let reply = match outcome {
            EventOutcome::Ok {
                reply,
                state: new_state,
                mut metadata,
                status,
            } => {
                if new_state.is_some() {
                    connection.state().upstream_state = new_state;
                }
                if matches!(job, Job::Mqtt { .. }) {
                    // Azure tells MQTT clients the handler's status as a user property.
                    metadata.push(("azure-status-code".into(), status.to_string()));
                }
                Ok((reply, metadata))
            }
            EventOutcome::Failed(reason) => Err(reason),
        };
        match (job, reply) {
            (Job::Event { ack_id, .. }, Ok((reply, metadata))) => {
                if let Some((kind, body)) = reply {
                    connection.deliver(&Outgoing::server(kind, body).with_metadata(metadata));
                }
                if let Some(id) = ack_id {
                    connection.state().first_time(id);
                }
                ack(&connection, ack_id, Ok(()));
            }
            (Job::Event { ack_id, .. }, Err(reason)) => {
                ack(&connection, ack_id, Err(("InvocationFailed", reason)))
            }
            (Job::Invoke { invocation_id, .. }, Ok((reply, metadata))) => {
                connection.reply(&Reply::Invoked {
                    invocation_id: &invocation_id,
                    result: Ok((
                        reply.as_ref().map(|(k, b)| (*k, b.as_ref())),
                        metadata.as_slice(),
                    )),
                });
            }
            (Job::Invoke { invocation_id, .. }, Err(reason)) => {
                connection.reply(&Reply::Invoked {
                    invocation_id: &invocation_id,
                    result: Err(("InvocationFailed", &reason)),
                });
            }
            (Job::Frame { .. }, Ok((reply, metadata))) => {
                if let Some((kind, body)) = reply {
                    connection.deliver(&Outgoing::server(kind, body).with_metadata(metadata));
                }
            }
            (Job::Mqtt { event, .. }, outcome) => {
                super::mqtt::event_answer(&connection, &event, outcome)
            }
            (Job::Frame { .. }, Err(reason)) => {
                tracing::debug!(connection_id = %connection.id, %reason, "message event failed; closing the simple client");
                connection.request_close(CloseRequest {
                    code: CLOSE_INTERNAL,
                    reason: "EventHandlerFailed".into(),
                    notify: false,
                    cause: CloseCause::EventHandler,
                });
            }
        }
    }
}
