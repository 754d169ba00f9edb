//! What a client's frames ask for, once its protocol has read them: requests (groups, events,
//! invocations, acks, permissions), `message` events and group messages of simple clients.

use super::*;
use crate::dataplane::hub::JoinError;
use crate::dataplane::names::validate_event;
use crate::dataplane::ops::too_many_groups;

/// Handles one data frame from the client, as its protocol reads it.
pub(super) fn on_frame(
    state: &AppState,
    hub: &Hub,
    connection: &Arc<Connection>,
    events: &mut EventQueue,
    data: Bytes,
    binary: bool,
) {
    match connection.protocol.decode(data, binary) {
        Inbound::Request(request) => on_request(state, hub, connection, events, request),
        Inbound::Mqtt(packets) => super::mqtt::on_packets(state, hub, connection, events, packets),
        Inbound::Invalid(e) if e.ack_id.is_some() => {
            ack(connection, e.ack_id, Err(("BadRequest", e.message)))
        }
        Inbound::Invalid(e) if e.invocation_id.is_some() => connection.reply(&Reply::Invoked {
            invocation_id: e.invocation_id.as_deref().unwrap_or_default(),
            result: Err(("BadRequest", &e.message)),
        }),
        Inbound::Invalid(e) if e.stream_id.is_some() => streams::malformed(
            state,
            connection,
            e.stream_id.as_deref().unwrap_or_default(),
            &e.message,
        ),
        Inbound::Invalid(e) if e.unknown_type => {
            tracing::debug!(connection_id = %connection.id, "ignored a message of unknown type");
        }
        Inbound::Invalid(e) => connection.request_close(CloseRequest {
            code: CLOSE_POLICY,
            reason: format!("Invalid message: {e}"),
            notify: true,
            cause: CloseCause::Error,
        }),
        Inbound::Event { data_type, data } => {
            if !has_handler(state, hub, "message") {
                connection.request_close(CloseRequest {
                    code: CLOSE_NORMAL,
                    reason: no_handler(hub, "message"),
                    notify: false,
                    cause: CloseCause::EventHandler,
                });
            } else if events
                .push(state, connection, Job::Frame { data_type, data })
                .is_err()
            {
                connection.request_close(CloseRequest {
                    code: CLOSE_POLICY,
                    reason: "TooManyEvents".into(),
                    notify: false,
                    cause: CloseCause::Limit,
                });
            }
        }
        Inbound::ToGroup {
            group,
            data_type,
            data,
        } => {
            if !connection
                .state()
                .permissions
                .allows(Permission::SendToGroup, &group)
            {
                connection.request_close(CloseRequest {
                    code: CLOSE_POLICY,
                    reason: format!("the client has no permission to send to group '{group}'"),
                    notify: false,
                    cause: CloseCause::Forbidden,
                });
                return;
            }
            let message = Outgoing::group(
                Arc::clone(&group),
                connection.user_id.clone(),
                data_type,
                data,
            )
            .with_sender(Arc::clone(&connection.id), false);
            send_to_group(state, hub, &group, message);
        }
    }
}

pub(super) fn ack(
    connection: &Connection,
    ack_id: Option<u64>,
    result: Result<(), (&str, String)>,
) {
    let Some(ack_id) = ack_id else { return };
    connection.reply(&Reply::Ack {
        ack_id,
        error: result
            .as_ref()
            .err()
            .map(|(name, message)| (*name, message.as_str())),
    });
}

/// Permission and dedup checks shared by joinGroup, leaveGroup and sendToGroup.
pub(super) fn admit(
    connection: &Connection,
    permission: Permission,
    group: &str,
    ack_id: Option<u64>,
) -> Result<bool, (&'static str, String)> {
    api::validate_group(group).map_err(|e| ("BadRequest", e.message))?;
    let mut state = connection.state();
    if !state.permissions.allows(permission, group) {
        let what = match permission {
            Permission::JoinLeaveGroup => "join or leave",
            Permission::SendToGroup => "send message to",
        };
        return Err((
            "Forbidden",
            format!("The client has no permission to {what} group '{group}'."),
        ));
    }
    Ok(ack_id.is_none_or(|id| state.first_time(id)))
}

pub(super) fn duplicate(ack_id: Option<u64>) -> (&'static str, String) {
    (
        "Duplicate",
        format!(
            "Message with ack-id: {} has been processed",
            ack_id.unwrap_or_default()
        ),
    )
}

/// A request of the Web PubSub client model.
fn on_request(
    state: &AppState,
    hub: &Hub,
    connection: &Arc<Connection>,
    events: &mut EventQueue,
    message: ClientMessage,
) {
    match message {
        ClientMessage::JoinGroup { group, ack_id } => {
            let result =
                admit(connection, Permission::JoinLeaveGroup, &group, ack_id).and_then(|first| {
                    if !first {
                        return Err(duplicate(ack_id));
                    }
                    hub.join(&connection.id, &group).map_err(|e| match e {
                        JoinError::TooManyGroups(groups) => ("BadRequest", too_many_groups(groups)),
                        JoinError::NoSuchConnection => (
                            "InternalServerError",
                            "the connection has left its hub".to_string(),
                        ),
                    })
                });
            ack_join(state, connection, ack_id, result);
        }
        ClientMessage::LeaveGroup { group, ack_id } => {
            let result =
                admit(connection, Permission::JoinLeaveGroup, &group, ack_id).and_then(|first| {
                    if !first {
                        return Err(duplicate(ack_id));
                    }
                    for (connection, group) in hub.leave(&connection.id, &group) {
                        group_state::cleared(state, &connection, &group);
                    }
                    Ok(())
                });
            ack(connection, ack_id, result);
        }
        ClientMessage::SendToGroup {
            group,
            ack_id,
            no_echo,
            data,
            metadata,
            ttl_seconds,
        } => {
            let result =
                admit(connection, Permission::SendToGroup, &group, ack_id).and_then(|first| {
                    if !first {
                        return Err(duplicate(ack_id));
                    }
                    let message = Outgoing::group(
                        group.as_str().into(),
                        connection.user_id.clone(),
                        data.data_type,
                        Bytes::from(data.bytes),
                    )
                    .with_sender(Arc::clone(&connection.id), no_echo)
                    .with_metadata(metadata);
                    let message = match ttl_seconds {
                        Some(ttl) => message.with_ttl(Duration::from_secs(u64::from(ttl))),
                        None => message,
                    };
                    send_to_group(state, hub, &group, message);
                    Ok(())
                });
            ack(connection, ack_id, result);
        }
        ClientMessage::OpenStream {
            group,
            ack_id,
            no_echo,
            stream,
        } => streams::open(state, connection, group, ack_id, no_echo, stream),
        ClientMessage::StreamData {
            stream_id,
            fragment,
        } => streams::data(state, connection, stream_id, fragment),
        ClientMessage::StreamEnd { stream_id, error } => {
            streams::end(state, connection, stream_id, error)
        }
        ClientMessage::SetGroupState {
            group,
            ack_id,
            state: pairs,
        } => group_state::set(state, hub, connection, group, ack_id, pairs),
        ClientMessage::SubscribeGroupState { group, ack_id } => {
            group_state::subscribe(state, hub, connection, group, ack_id)
        }
        ClientMessage::UnsubscribeGroupState { group, ack_id } => {
            group_state::unsubscribe(connection, group, ack_id)
        }
        ClientMessage::Event {
            event,
            ack_id,
            data,
            metadata,
        } => {
            if let Err(message) = validate_event(&event) {
                if ack_id.is_none() {
                    tracing::debug!(connection_id = %connection.id, "ignored an event with an invalid name");
                }
                return ack(connection, ack_id, Err(("BadRequest", message)));
            }
            if !has_handler(state, hub, &event) {
                return ack(
                    connection,
                    ack_id,
                    Err(("InvocationFailed", no_handler(hub, &event))),
                );
            }
            if ack_id.is_some_and(|id| connection.state().seen(id)) {
                return ack(connection, ack_id, Err(duplicate(ack_id)));
            }
            if events
                .push(
                    state,
                    connection,
                    Job::Event {
                        event,
                        ack_id,
                        data,
                        metadata,
                    },
                )
                .is_err()
            {
                ack(
                    connection,
                    ack_id,
                    Err((
                        "InvocationFailed",
                        "too many events are waiting for the event handler".into(),
                    )),
                );
            }
        }
        ClientMessage::Invoke {
            invocation_id,
            event,
            data,
            metadata,
        } => {
            if let Err(message) = validate_event(&event) {
                return connection.reply(&Reply::Invoked {
                    invocation_id: &invocation_id,
                    result: Err(("BadRequest", &message)),
                });
            }
            if !has_handler(state, hub, &event) {
                let message = no_handler(hub, &event);
                return connection.reply(&Reply::Invoked {
                    invocation_id: &invocation_id,
                    result: Err(("InvocationFailed", &message)),
                });
            }
            if let Err(Job::Invoke { invocation_id, .. }) = events.push(
                state,
                connection,
                Job::Invoke {
                    invocation_id,
                    event,
                    data,
                    metadata,
                },
            ) {
                let message = "too many events are waiting for the event handler";
                connection.reply(&Reply::Invoked {
                    invocation_id: &invocation_id,
                    result: Err(("InvocationFailed", message)),
                });
            }
        }
        ClientMessage::CancelInvocation { .. } => {}
        ClientMessage::SequenceAck { sequence_id } => connection.acknowledge(sequence_id),
        ClientMessage::Ping => connection.reply(&Reply::Pong),
    }
}

pub(super) fn no_handler(hub: &Hub, event: &str) -> String {
    format!(
        "no event handler is configured for event '{}' in hub '{}'",
        event.chars().take(128).collect::<String>(),
        hub.name
    )
}
