//! What a client's frames mean: JSON-subprotocol requests (groups, acks, permissions) and
//! simple-client frames.

use super::*;

/// Handles one data frame from the client.
pub(super) fn on_frame(
    state: &AppState,
    hub: &Hub,
    connection: &Arc<Connection>,
    events: &mut EventQueue,
    data: Bytes,
    binary: bool,
) {
    match &connection.protocol {
        Protocol::Simple(SimpleMode::SendEvent) => {
            let data_type = if binary {
                DataType::Binary
            } else {
                DataType::Text
            };
            if !has_handler(state, hub, "message") {
                connection.request_close(CloseRequest {
                    code: CLOSE_NORMAL,
                    reason: no_handler(hub, "message"),
                    notify: false,
                });
            } else if events
                .push(state, connection, Job::Frame { data_type, data })
                .is_err()
            {
                connection.request_close(CloseRequest {
                    code: CLOSE_POLICY,
                    reason: "TooManyEvents".into(),
                    notify: false,
                });
            }
        }
        Protocol::Simple(SimpleMode::SendToGroup(group)) => {
            if !connection
                .state()
                .permissions
                .allows(Permission::SendToGroup, group)
            {
                connection.request_close(CloseRequest {
                    code: CLOSE_POLICY,
                    reason: format!("the client has no permission to send to group '{group}'"),
                    notify: false,
                });
                return;
            }
            let data_type = if binary {
                DataType::Binary
            } else {
                DataType::Text
            };
            let message = Outgoing::group(
                Arc::clone(group),
                connection.user_id.clone(),
                data_type,
                data,
            )
            .with_sender(Arc::clone(&connection.id), false);
            send_to_group(state, hub, group, message);
        }
        Protocol::Json | Protocol::JsonReliable => on_json(state, hub, connection, events, &data),
    }
}

pub(super) fn ack(
    connection: &Connection,
    ack_id: Option<u64>,
    result: Result<(), (&str, String)>,
) {
    let Some(ack_id) = ack_id else { return };
    connection.send_text(match result {
        Ok(()) => cp::ack_success(ack_id),
        Err((name, message)) => cp::ack_error(ack_id, name, &message),
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

pub(super) fn on_json(
    state: &AppState,
    hub: &Hub,
    connection: &Arc<Connection>,
    events: &mut EventQueue,
    frame: &[u8],
) {
    let message = match cp::parse_client_message(frame) {
        Ok(message) => message,
        Err(e) if e.ack_id.is_some() => {
            return ack(connection, e.ack_id, Err(("BadRequest", e.message)))
        }
        Err(e) if e.unknown_type => {
            tracing::debug!(connection_id = %connection.id, "ignored a message of unknown type");
            return;
        }
        Err(e) => {
            connection.request_close(CloseRequest {
                code: CLOSE_POLICY,
                reason: format!("Invalid message: {e}"),
                notify: true,
            });
            return;
        }
    };
    match message {
        ClientMessage::JoinGroup { group, ack_id } => {
            let result =
                admit(connection, Permission::JoinLeaveGroup, &group, ack_id).and_then(|first| {
                    if !first {
                        return Err(duplicate(ack_id));
                    }
                    hub.join(&connection.id, &group);
                    Ok(())
                });
            ack_join(state, connection, ack_id, result);
        }
        ClientMessage::LeaveGroup { group, ack_id } => {
            let result =
                admit(connection, Permission::JoinLeaveGroup, &group, ack_id).and_then(|first| {
                    if !first {
                        return Err(duplicate(ack_id));
                    }
                    hub.leave(&connection.id, &group);
                    Ok(())
                });
            ack(connection, ack_id, result);
        }
        ClientMessage::SendToGroup {
            group,
            ack_id,
            no_echo,
            data,
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
                    .with_sender(Arc::clone(&connection.id), no_echo);
                    send_to_group(state, hub, &group, message);
                    Ok(())
                });
            ack(connection, ack_id, result);
        }
        ClientMessage::Event {
            event,
            ack_id,
            data,
        } => {
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
        } => {
            if !has_handler(state, hub, &event) {
                let message = no_handler(hub, &event);
                return connection.send_text(cp::invoke_error(
                    &invocation_id,
                    "InvocationFailed",
                    &message,
                ));
            }
            if let Err(Job::Invoke { invocation_id, .. }) = events.push(
                state,
                connection,
                Job::Invoke {
                    invocation_id,
                    event,
                    data,
                },
            ) {
                let message = "too many events are waiting for the event handler";
                connection.send_text(cp::invoke_error(
                    &invocation_id,
                    "InvocationFailed",
                    message,
                ));
            }
        }
        ClientMessage::CancelInvocation { .. } => {}
        ClientMessage::SequenceAck { sequence_id } => connection.acknowledge(sequence_id),
        ClientMessage::Ping => connection.send_text(cp::PONG.to_string()),
    }
}

pub(super) fn no_handler(hub: &Hub, event: &str) -> String {
    format!(
        "no event handler is configured for event '{}' in hub '{}'",
        event.chars().take(128).collect::<String>(),
        hub.name
    )
}
