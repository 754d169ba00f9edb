//! MQTT clients: `/clients/mqtt/hubs/{hub}`, MQTT 3.1.1 and 5.0 over WebSocket. The upgrade is
//! authenticated like any client's (the token's audience on the MQTT path); then the socket
//! must bring a CONNECT within [`CONNECT_TIMEOUT`]. The connect event goes to the app server
//! with the CONNECT's fields, and the client id is the connection id: a client reconnecting
//! with a session kept (clean start off) resumes it, with its subscriptions and the QoS 1
//! messages it has not acknowledged; otherwise an older connection with the same id is taken
//! over. From then on the connection is like any other: its packets become joins, leaves and
//! group messages, and its messages go out through the protocol's encoder.

use super::*;
use crate::dataplane::hub::JoinError;
use crate::protocols::mqtt::{packet_id, Mqtt, Will, CLIENT_DISCONNECTED};
use base64::Engine;
use hubbub_proto::mqtt::{
    self as wire, ConnectPacket, FrameError, Packet, PublishPacket, QoS, ReasonCode, SubAckCode,
    SubscribePacket, UnsubAckCode, UnsubscribePacket,
};

/// How long a socket may take to send its CONNECT.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the upgrade request told, for the connect event.
struct Handshake {
    hub: String,
    claims: ClientClaims,
    signer: Option<(KeySlot, u64)>,
    body: ConnectBody,
}

pub(super) async fn upgrade(
    State(state): State<AppState>,
    origin: crate::peer::Origin,
    Path(hub): Path<String>,
    Query(params): Query<Params>,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
    upgrade: Result<Upgrade, NotAnUpgrade>,
) -> Response {
    begin(state, origin, hub, params, raw_query, headers, upgrade)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn begin(
    state: AppState,
    origin: crate::peer::Origin,
    hub_name: String,
    params: Params,
    raw_query: Option<String>,
    headers: HeaderMap,
    upgrade: Result<Upgrade, NotAnUpgrade>,
) -> Result<Response, ApiError> {
    api::validate_hub(&hub_name)?;
    let hub_name = crate::dataplane::hub::canonical_hub(&hub_name);
    let offered = offered_protocols(&headers);
    let Some(subprotocol) = offered
        .iter()
        .find(|p| wire::SUBPROTOCOLS.contains(&p.as_str()))
        .and_then(|p| HeaderValue::from_str(p).ok())
    else {
        return Err(ApiError::bad_request(
            "UnsupportedSubprotocol",
            "MQTT clients offer the WebSocket subprotocol 'mqtt'",
        ));
    };
    let settings = state.hub_settings.get(&hub_name);
    let (claims, signer) = authenticate(
        &state,
        &origin,
        &hub_name,
        &format!("/clients/mqtt/hubs/{hub_name}"),
        &params,
        &headers,
        &settings,
    )?;
    let mut upgrade = upgrade.map_err(|_| not_an_upgrade())?;
    upgrade.set_selected_protocol(subprotocol);
    let handshake = Handshake {
        body: connect_body(&claims, raw_query.as_deref(), &headers),
        hub: hub_name,
        claims,
        signer,
    };
    let guard = state.sockets.token();
    Ok(upgrade.on_upgrade(move |socket| async move {
        connect(state, socket, handshake).await;
        drop(guard);
    }))
}

/// Reads the socket's first packet, which must be a whole CONNECT, with any packets sent
/// right behind it. `Err(None)`: the socket closed, or sent nothing in time (counted).
async fn first_packets(
    state: &AppState,
    socket: &mut Socket,
) -> Result<Vec<Packet>, Option<FrameError>> {
    let mut framer = wire::Framer::new(MAX_CLIENT_MESSAGE_BYTES);
    let read = async {
        loop {
            match socket.next().await {
                Some(Ok(WsMessage::Binary(data))) => {
                    let packets = framer.push(&data, wire::V5).map_err(Some)?;
                    if !packets.is_empty() {
                        return Ok(packets);
                    }
                }
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
                Some(Ok(WsMessage::Text(_))) => {
                    return Err(Some(FrameError::Malformed(
                        "MQTT packets travel in binary frames".into(),
                    )))
                }
                _ => return Err(None),
            }
        }
    };
    let first = tokio::time::timeout(CONNECT_TIMEOUT, read).await;
    let counts = state.hubs.limit_counts();
    match first {
        Ok(Err(Some(FrameError::TooLarge(..)))) => {
            counts.mqtt_packet_size.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) => {
            counts.mqtt_connect_timeout.fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
    first.unwrap_or(Err(None))
}

/// Sends `frame` (if any) and closes the socket: a CONNECT refused or never made.
async fn refuse(mut socket: Socket, frame: Option<Bytes>) {
    if let Some(frame) = frame {
        let _ = socket.send(WsMessage::Binary(frame)).await;
    }
    let close = WsCloseFrame {
        code: CLOSE_NORMAL.into(),
        reason: "".into(),
    };
    let _ = tokio::time::timeout(
        CLOSE_HANDSHAKE_TIMEOUT,
        socket.send(WsMessage::Close(Some(close))),
    )
    .await;
}

fn refusal_frame(
    version: u8,
    code: ReasonCode,
    reason: &str,
    properties: &[(String, String)],
) -> Bytes {
    wire::connack(
        version,
        false,
        code,
        &wire::ConnAckInfo {
            reason: Some(reason),
            user_properties: properties,
            ..Default::default()
        },
    )
}

/// The MQTT fields of the connect event.
fn mqtt_connect_fields(connect: &ConnectPacket) -> serde_json::Value {
    let user_properties: Vec<crate::upstream::NameValue> =
        wire::user_properties(&connect.properties)
            .into_iter()
            .map(|(name, value)| crate::upstream::NameValue { name, value })
            .collect();
    serde_json::json!({
        "protocolVersion": connect.protocol_version,
        "cleanStart": connect.clean_start,
        "username": connect.username,
        "password": connect.password.as_ref().map(|p| base64::engine::general_purpose::STANDARD.encode(p)),
        "userProperties": (connect.protocol_version == wire::V5).then_some(user_properties),
    })
}

/// The will of a CONNECT.
fn will_of(connect: &ConnectPacket) -> Option<Will> {
    let will = connect.will.as_ref()?;
    let properties = &will.properties;
    Some(Will {
        topic: will.topic.clone(),
        payload: Bytes::from(will.payload.clone()),
        content_type: properties.content_type.clone(),
        expiry_secs: properties.message_expiry_interval,
        user_properties: properties.user_properties.clone(),
        at_most_once: will.qos == QoS::AtMostOnce,
    })
}

/// The CONNECT, the connect event, then a session: resumed, or new.
async fn connect(state: AppState, mut socket: Socket, handshake: Handshake) {
    let packets = match first_packets(&state, &mut socket).await {
        Ok(packets) => packets,
        Err(Some(FrameError::UnsupportedVersion(level))) => {
            tracing::debug!(
                level,
                "MQTT connect of an unsupported protocol level refused"
            );
            let frame = Bytes::from_static(&[0x20, 0x02, 0x00, 0x01]);
            return refuse(socket, Some(frame)).await;
        }
        Err(e) => {
            tracing::debug!(error = ?e, "MQTT socket closed before a valid CONNECT");
            return refuse(socket, None).await;
        }
    };
    let mut packets = packets.into_iter();
    let Some(Packet::Connect(connect)) = packets.next() else {
        tracing::debug!("an MQTT client's first packet was not CONNECT");
        return refuse(socket, None).await;
    };
    let pipelined: Vec<Packet> = packets.collect();
    let version = connect.protocol_version;
    let node = state.backplane.node_id().map(str::to_owned);
    let accepted = match wire::check_connect(&connect, || new_connection_id(None)) {
        Ok(accepted) => accepted,
        Err(refusal) => {
            tracing::debug!(reason = %refusal.reason, "MQTT connect refused");
            let frame = (version == wire::V5 || refusal.code != ReasonCode::ProtocolError)
                .then(|| refusal_frame(version, refusal.code, &refusal.reason, &[]));
            return refuse(socket, frame).await;
        }
    };
    let physical_id = new_connection_id(node.as_deref());
    let Handshake {
        hub: hub_name,
        claims,
        signer,
        mut body,
    } = handshake;
    let connection_id: Arc<str> = accepted.client_id.as_str().into();

    // The blocking connect event, for every CONNECT.
    let settings = state.hub_settings.get(&hub_name);
    let ctx = EventContext {
        hub: hub_name.as_str().into(),
        connection_id: Arc::clone(&connection_id),
        user_id: claims.user_id.as_deref().map(Into::into),
        subprotocol: Some(crate::protocols::mqtt::NAME),
        state: None,
        headers: vec![("ce-physicalConnectionId", physical_id.clone())],
        metadata_header: "mqtt-",
    };
    body.mqtt = Some(mqtt_connect_fields(&connect));
    let mut response = crate::upstream::ConnectResponse::default();
    let mut upstream_state = None;
    if let Some(outcome) = state.upstream.connect(&settings, &ctx, &body).await {
        match outcome {
            ConnectOutcome::Accept {
                response: accepted_by_app,
                state: new_state,
            } => {
                if let Some(chosen) = accepted_by_app
                    .subprotocol
                    .as_deref()
                    .filter(|p| !p.is_empty() && *p != crate::protocols::mqtt::NAME)
                {
                    let reason = format!(
                        "the event handler chose subprotocol '{}'; MQTT clients speak 'mqtt'",
                        chosen.chars().take(64).collect::<String>()
                    );
                    let frame = refusal_frame(
                        version,
                        ReasonCode::ImplementationSpecificError,
                        &reason,
                        &[],
                    );
                    return refuse(socket, Some(frame)).await;
                }
                response = accepted_by_app;
                upstream_state = new_state;
            }
            ConnectOutcome::Reject { status, message } => {
                let (code, reason, properties) = app_refusal(version, status, &message);
                tracing::debug!(hub = %hub_name, code = u8::from(code), "MQTT connect refused by the app server");
                return refuse(
                    socket,
                    Some(refusal_frame(version, code, &reason, &properties)),
                )
                .await;
            }
            ConnectOutcome::Fail(reason) => {
                tracing::debug!(hub = %hub_name, %reason, "MQTT connect: the event handler failed");
                let frame = refusal_frame(
                    version,
                    ReasonCode::ServerUnavailable,
                    "the connect event handler failed",
                    &[],
                );
                return refuse(socket, Some(frame)).await;
            }
        }
    }
    let handler_properties: Vec<(String, String)> = response
        .mqtt
        .as_ref()
        .map(|m| {
            m.user_properties
                .iter()
                .map(|p| (p.name.clone(), p.value.clone()))
                .collect()
        })
        .unwrap_or_default();
    let grace = state.client.reconnect_grace.as_secs();
    let connack_info = |assigned: bool| wire::ConnAckInfo {
        assigned_client_id: assigned.then_some(accepted.client_id.as_str()),
        server_keep_alive: (version == wire::V5 && accepted.keep_alive != connect.keep_alive)
            .then_some(accepted.keep_alive),
        session_expiry: (version == wire::V5 && u64::from(accepted.session_expiry) > grace)
            .then(|| u32::try_from(grace).unwrap_or(u32::MAX)),
        reason: None,
        user_properties: &handler_properties,
        max_packet: MAX_CLIENT_MESSAGE_BYTES as u32,
    };

    let hub = state.hubs.get_or_create(&hub_name);
    let token_user = claims.user_id.clone();
    let existing = match hub.connection(&accepted.client_id) {
        Some(existing) => Some(existing),
        // Kept by another node: taken over to this one to resume it.
        None if !connect.clean_start => {
            match state
                .backplane
                .take_session(&hub_name, &accepted.client_id)
                .await
            {
                Some(session) => {
                    let (_, restored) = crate::dataplane::session::restore(
                        &state.hubs,
                        &hub_name,
                        &accepted.client_id,
                        &session,
                    );
                    state.backplane.session_arrived(&accepted.client_id);
                    state.watch_streams(&restored);
                    // Sends to its groups and user reach this node from now.
                    state.backplane.settle().await;
                    tracing::debug!(connection_id = %restored.id, "MQTT session handed over from another node");
                    Some(restored)
                }
                None => None,
            }
        }
        // A clean start ends the session wherever it is.
        None => {
            let question = crate::dataplane::ops::Question::new(
                &hub_name,
                crate::dataplane::ops::Ask::Close {
                    scope: Target::Connection(accepted.client_id.clone()),
                    excluded: Vec::new(),
                    reason: "SessionTakenOver".into(),
                    cause: CloseCause::SessionTakenOver,
                },
            );
            state.backplane.ask(&question, |a| a.ok).await;
            None
        }
    };
    // A session under this client id: resumed, or ended for the new one. A WebSocket client's
    // id is never an MQTT session to take over.
    if existing
        .as_ref()
        .is_some_and(|c| c.protocol.as_mqtt().is_none())
    {
        let frame = refusal_frame(
            version,
            ReasonCode::ClientIdentifierNotValid,
            "this client id is in use by another kind of client",
            &[],
        );
        return refuse(socket, Some(frame)).await;
    }
    if let Some(existing) = existing {
        let resumable = existing.protocol.as_mqtt().filter(|m| {
            !connect.clean_start
                && m.version == version
                && token_user
                    .as_deref()
                    .is_none_or(|u| existing.user_id.as_deref() == Some(u))
                && existing.close_requested().is_none()
        });
        if let Some(mqtt) = resumable.cloned() {
            mqtt.attach(physical_id, accepted.session_expiry);
            mqtt.set_keep_alive(accepted.keep_alive);
            mqtt.set_will(will_of(&connect));
            if upstream_state.is_some() {
                existing.state().upstream_state = upstream_state;
            }
            let connack = wire::connack(
                version,
                true,
                ReasonCode::Success,
                &connack_info(accepted.assigned),
            );
            let epoch = existing.resume(Some(Message::Binary(connack)));
            tracing::debug!(hub = %hub.name, connection_id = %existing.id, "MQTT session resumed");
            handle_pipelined(&state, &hub, &existing, pipelined);
            spawn_socket(state, hub, existing, socket, epoch);
            return;
        }
        if hub.close(&existing, "SessionTakenOver", CloseCause::SessionTakenOver) {
            state.departed(&existing, "SessionTakenOver");
        }
    }

    let user_id = response.user_id.filter(|u| !u.is_empty()).or(token_user);
    if let Some(user) = user_id.as_deref() {
        if !state.hubs.admits_user(&hub_name, user) {
            let frame = refusal_frame(
                version,
                ReasonCode::QuotaExceeded,
                "this user has the most connections it may have to the hub",
                &[],
            );
            return refuse(socket, Some(frame)).await;
        }
    }
    let mut roles = claims.roles.clone();
    roles.extend(response.roles);
    let mut groups = claims.groups.clone();
    groups.extend(response.groups);
    let groups: Vec<String> = groups
        .into_iter()
        .filter(|g| api::validate_group(g).is_ok())
        .collect();
    let session_id = new_connection_id(node.as_deref());
    let mqtt = Arc::new(Mqtt::new(
        version,
        session_id,
        physical_id,
        MAX_CLIENT_MESSAGE_BYTES,
        accepted.session_expiry,
    ));
    mqtt.set_keep_alive(accepted.keep_alive);
    mqtt.set_will(will_of(&connect));
    let permissions = Permissions::from_roles(roles.iter().map(String::as_str));
    let connection = Arc::new(
        Connection::new(
            connection_id,
            hub_name.as_str().into(),
            user_id.map(Into::into),
            Protocol::mqtt(mqtt),
            permissions,
        )
        .with_limits(state.hubs.connection_limits())
        .signed_by(signer),
    );
    connection.state().upstream_state = upstream_state;
    if let Some(displaced) = hub.add(Arc::clone(&connection), &groups) {
        // The same client id connected twice at once: the other one is taken over.
        displaced.request_close(CloseRequest {
            code: CLOSE_POLICY,
            reason: "SessionTakenOver".into(),
            notify: true,
            cause: CloseCause::SessionTakenOver,
        });
        state.departed(&displaced, "SessionTakenOver");
    }
    // Sends to the hub, the user and the groups reach this node from now.
    state.backplane.settle().await;
    let connack = wire::connack(
        version,
        false,
        ReasonCode::Success,
        &connack_info(accepted.assigned),
    );
    connection.push(Message::Binary(connack));
    tracing::debug!(hub = %hub.name, connection_id = %connection.id, version, "MQTT client connected");
    state.opened(&connection);
    state.upstream.notify(
        &settings,
        EventContext::of(&connection),
        "connected",
        serde_json::json!({}),
    );
    handle_pipelined(&state, &hub, &connection, pipelined);
    spawn_socket(state, hub, connection, socket, 1);
}

/// Packets the client sent right behind its CONNECT.
fn handle_pipelined(
    state: &AppState,
    hub: &Hub,
    connection: &Arc<Connection>,
    packets: Vec<Packet>,
) {
    if !packets.is_empty() {
        on_packets(
            state,
            hub,
            connection,
            &mut EventQueue::default(),
            Ok(packets),
        );
    }
}

/// The CONNACK refusal of an app server's 4xx: its `mqtt` code, reason and user properties
/// when its body has them, else the code its status stands for.
fn app_refusal(
    version: u8,
    status: u16,
    body: &str,
) -> (ReasonCode, String, Vec<(String, String)>) {
    #[derive(serde::Deserialize)]
    struct Body {
        mqtt: Option<MqttRefusal>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct MqttRefusal {
        code: Option<u8>,
        reason: Option<String>,
        #[serde(default)]
        user_properties: Vec<crate::upstream::NameValue>,
    }
    let refusal = serde_json::from_str::<Body>(body).ok().and_then(|b| b.mqtt);
    let code = match refusal.as_ref().and_then(|r| r.code) {
        Some(code) => wire::refusal_code(version, code),
        None => wire::refusal_for_status(status),
    };
    let reason = refusal
        .as_ref()
        .and_then(|r| r.reason.clone())
        .unwrap_or_else(|| "the app server refused the connection".into());
    let properties = refusal
        .map(|r| {
            r.user_properties
                .into_iter()
                .map(|p| (p.name, p.value))
                .collect()
        })
        .unwrap_or_default();
    (code, reason, properties)
}

/// Ends the connection for a protocol error: MQTT 5 clients get a DISCONNECT with `code`.
fn protocol_error(connection: &Connection, mqtt: &Mqtt, code: ReasonCode, reason: &str) {
    tracing::debug!(connection_id = %connection.id, code = u8::from(code), %reason, "MQTT protocol error");
    if mqtt.is_v5() {
        mqtt.record_disconnect(|d| d.by_service = Some(u8::from(code)));
        connection.push(Message::Binary(wire::disconnect(code, Some(reason))));
    }
    connection.request_close(CloseRequest {
        code: CLOSE_POLICY,
        reason: reason.to_string(),
        notify: false,
        cause: CloseCause::Error,
    });
}

/// Handles the packets a frame completed.
pub(super) fn on_packets(
    state: &AppState,
    hub: &Hub,
    connection: &Arc<Connection>,
    events: &mut EventQueue,
    packets: Result<Vec<Packet>, FrameError>,
) {
    let Some(mqtt) = connection.protocol.as_mqtt().cloned() else {
        return;
    };
    let packets = match packets {
        Ok(packets) => packets,
        Err(e) => {
            let code = match e {
                FrameError::TooLarge(..) => {
                    state
                        .hubs
                        .limit_counts()
                        .mqtt_packet_size
                        .fetch_add(1, Ordering::Relaxed);
                    ReasonCode::PacketTooLarge
                }
                _ => ReasonCode::MalformedPacket,
            };
            return protocol_error(connection, &mqtt, code, &e.to_string());
        }
    };
    for packet in packets {
        if connection.close_requested().is_some() {
            return;
        }
        match packet {
            Packet::Publish(publish) => on_publish(state, hub, connection, &mqtt, events, publish),
            Packet::PubAck(ack) => {
                connection.acknowledge_one(|sequence_id| packet_id(sequence_id) == ack.packet_id);
            }
            Packet::Subscribe(subscribe) => on_subscribe(state, hub, connection, &mqtt, subscribe),
            Packet::Unsubscribe(unsubscribe) => {
                on_unsubscribe(state, hub, connection, &mqtt, unsubscribe)
            }
            Packet::PingReq => connection.reply(&Reply::Pong),
            Packet::Disconnect(disconnect) => {
                let code = u8::from(disconnect.reason_code);
                if disconnect.reason_code != ReasonCode::DisconnectWithWillMessage {
                    mqtt.set_will(None);
                }
                if let Some(expiry) = wire::int_property(
                    &disconnect.properties,
                    wire::PropertyId::SessionExpiryInterval,
                ) {
                    mqtt.set_session_expiry(expiry);
                }
                let properties = wire::user_properties(&disconnect.properties);
                mqtt.record_disconnect(|d| d.by_client = Some((code, properties)));
                connection.request_close(CloseRequest {
                    code: CLOSE_NORMAL,
                    reason: CLIENT_DISCONNECTED.into(),
                    notify: false,
                    cause: CloseCause::Client,
                });
            }
            Packet::Connect(_) => protocol_error(
                connection,
                &mqtt,
                ReasonCode::ProtocolError,
                "a second CONNECT",
            ),
            Packet::PubRec(_) | Packet::PubRel(_) | Packet::PubComp(_) => protocol_error(
                connection,
                &mqtt,
                ReasonCode::QoSNotSupported,
                "QoS 2 is not supported",
            ),
            other => {
                let reason = format!("a client does not send {}", other.packet_type_name());
                protocol_error(connection, &mqtt, ReasonCode::ProtocolError, &reason)
            }
        }
    }
}

/// Answers a QoS 1 PUBLISH (nothing for QoS 0; MQTT 3.1.1 acknowledges even a refusal, which it
/// cannot tell).
fn puback(
    connection: &Connection,
    mqtt: &Mqtt,
    publish: &PublishPacket,
    refusal: Option<(ReasonCode, &str)>,
) {
    let Some(id) = publish
        .packet_id
        .filter(|_| publish.qos == QoS::AtLeastOnce)
    else {
        return;
    };
    let (code, reason) = refusal.unwrap_or((ReasonCode::Success, ""));
    let reason = (!reason.is_empty()).then_some(reason);
    connection.push(Message::Binary(wire::puback(
        mqtt.version,
        id,
        code,
        reason,
    )));
}

/// The data type and payload of a PUBLISH, checked against its content type.
fn payload_of(content_type: Option<&str>, payload: Bytes) -> Result<(DataType, Bytes), String> {
    let data_type = wire::data_type_of(content_type);
    match data_type {
        DataType::Text if std::str::from_utf8(&payload).is_err() => {
            Err("a text/plain payload is not UTF-8".into())
        }
        DataType::Json if serde_json::from_slice::<serde::de::IgnoredAny>(&payload).is_err() => {
            Err("an application/json payload is not JSON".into())
        }
        DataType::Protobuf => hubbub_proto::client_protocol::check_protobuf_any(&payload)
            .map(|()| (data_type, payload))
            .map_err(|e| format!("an application/x-protobuf payload: {e}")),
        _ => Ok((data_type, payload)),
    }
}

/// MQTT 5 user properties as message metadata, when they fit its rules (else none).
fn as_metadata(pairs: Vec<(String, String)>) -> Metadata {
    if hubbub_proto::client_protocol::check_metadata(&pairs).is_ok() {
        pairs
    } else {
        Vec::new()
    }
}

fn on_publish(
    state: &AppState,
    hub: &Hub,
    connection: &Arc<Connection>,
    mqtt: &Mqtt,
    events: &mut EventQueue,
    publish: PublishPacket,
) {
    if publish.qos == QoS::ExactlyOnce {
        return protocol_error(
            connection,
            mqtt,
            ReasonCode::QoSNotSupported,
            "QoS 2 is not supported",
        );
    }
    if publish.retain {
        return protocol_error(
            connection,
            mqtt,
            ReasonCode::RetainNotSupported,
            "retained messages are not supported",
        );
    }
    if publish.properties.contains(wire::PropertyId::TopicAlias) {
        return protocol_error(
            connection,
            mqtt,
            ReasonCode::TopicAliasInvalid,
            "topic aliases are not supported",
        );
    }
    if let Err(reason) = wire::check_topic_name(&publish.topic_name) {
        return protocol_error(connection, mqtt, ReasonCode::TopicNameInvalid, &reason);
    }
    let content_type = wire::string_property(&publish.properties, wire::PropertyId::ContentType)
        .map(str::to_owned);
    let (data_type, payload) = match payload_of(content_type.as_deref(), publish.payload.clone()) {
        Ok(checked) => checked,
        Err(reason) => {
            return puback(
                connection,
                mqtt,
                &publish,
                Some((ReasonCode::PayloadFormatInvalid, &reason)),
            )
        }
    };
    let metadata = as_metadata(wire::user_properties(&publish.properties));
    if let Some(event) = wire::event_name(&publish.topic_name) {
        let event = event.to_string();
        if let Err(reason) = crate::dataplane::names::validate_event(&event) {
            return puback(
                connection,
                mqtt,
                &publish,
                Some((ReasonCode::TopicNameInvalid, &reason)),
            );
        }
        let job = Job::Mqtt {
            event,
            data: hubbub_proto::client_protocol::Data {
                data_type,
                bytes: payload.to_vec(),
            },
            metadata,
        };
        if events.push(state, connection, job).is_err() {
            return puback(
                connection,
                mqtt,
                &publish,
                Some((
                    ReasonCode::QuotaExceeded,
                    "too many events are waiting for the event handler",
                )),
            );
        }
        return puback(connection, mqtt, &publish, None);
    }
    let group = publish.topic_name.as_str();
    if let Err(e) = api::validate_group(group) {
        return puback(
            connection,
            mqtt,
            &publish,
            Some((ReasonCode::TopicNameInvalid, &e.message)),
        );
    }
    if !connection
        .state()
        .permissions
        .allows(Permission::SendToGroup, group)
    {
        tracing::debug!(connection_id = %connection.id, "an MQTT publish without the permission was dropped");
        let reason = format!(
            "the client has no permission to publish to '{}'",
            group.chars().take(64).collect::<String>()
        );
        return puback(
            connection,
            mqtt,
            &publish,
            Some((ReasonCode::NotAuthorized, &reason)),
        );
    }
    let mut message = Outgoing::group(group.into(), connection.user_id.clone(), data_type, payload)
        .with_sender(Arc::clone(&connection.id), false)
        .with_metadata(metadata);
    message.at_most_once = publish.qos == QoS::AtMostOnce;
    if let Some(expiry) =
        wire::int_property(&publish.properties, wire::PropertyId::MessageExpiryInterval)
    {
        message = message.with_ttl(Duration::from_secs(u64::from(expiry)));
    }
    send_to_group(state, hub, group, message);
    puback(connection, mqtt, &publish, None);
}

fn on_subscribe(
    state: &AppState,
    hub: &Hub,
    connection: &Arc<Connection>,
    mqtt: &Mqtt,
    subscribe: SubscribePacket,
) {
    let mut codes = Vec::with_capacity(subscribe.filters.len());
    for filter in &subscribe.filters {
        let granted = if filter.options.qos == QoS::AtMostOnce {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        let topic = filter.filter.as_str();
        let code = match wire::check_topic_filter(topic) {
            Err((code, reason)) => {
                tracing::debug!(connection_id = %connection.id, %reason, "MQTT subscription refused");
                code
            }
            // The service's own topics need no subscription: their messages come anyway.
            Ok(()) if topic.starts_with('$') => SubAckCode::from_qos(granted),
            Ok(()) if api::validate_group(topic).is_err() => SubAckCode::TopicFilterInvalid,
            Ok(())
                if !connection
                    .state()
                    .permissions
                    .allows(Permission::JoinLeaveGroup, topic) =>
            {
                SubAckCode::NotAuthorized
            }
            Ok(()) => match hub.join(&connection.id, topic) {
                Ok(()) => {
                    mqtt.subscribe(topic, granted);
                    SubAckCode::from_qos(granted)
                }
                Err(JoinError::TooManyGroups(_)) => SubAckCode::QuotaExceeded,
                Err(JoinError::NoSuchConnection) => SubAckCode::UnspecifiedError,
            },
        };
        codes.push(code);
    }
    let frame = Message::Binary(wire::suback(mqtt.version, subscribe.packet_id, &codes));
    // Acknowledged once the other nodes send this node the groups' messages.
    match state.backplane.settling() {
        Some(settling) => {
            let connection = Arc::clone(connection);
            tokio::spawn(async move {
                settling.await;
                connection.push(frame);
            });
        }
        None => connection.push(frame),
    }
}

fn on_unsubscribe(
    state: &AppState,
    hub: &Hub,
    connection: &Arc<Connection>,
    mqtt: &Mqtt,
    unsubscribe: UnsubscribePacket,
) {
    let codes: Vec<UnsubAckCode> = unsubscribe
        .filters
        .iter()
        .map(|topic| {
            if topic.starts_with('$') {
                return UnsubAckCode::Success;
            }
            if api::validate_group(topic).is_err() {
                return UnsubAckCode::TopicFilterInvalid;
            }
            if !connection
                .state()
                .permissions
                .allows(Permission::JoinLeaveGroup, topic)
            {
                return UnsubAckCode::NotAuthorized;
            }
            let subscribed = mqtt.unsubscribe(topic);
            let member = hub.is_member(&connection.id, topic);
            for (connection, group) in hub.leave(&connection.id, topic) {
                group_state::cleared(state, &connection, &group);
            }
            if subscribed || member {
                UnsubAckCode::Success
            } else {
                UnsubAckCode::NoSubscriptionExisted
            }
        })
        .collect();
    connection.push(Message::Binary(wire::unsuback(
        mqtt.version,
        unsubscribe.packet_id,
        &codes,
    )));
}

/// Publishes a will: the connection ended without a DISCONNECT. Like a PUBLISH of the client's,
/// it needs the permission to send to the topic's group.
pub(crate) fn publish_will(state: &AppState, hub: &Hub, connection: &Connection, will: Will) {
    let group = will.topic.as_str();
    if api::validate_group(group).is_err()
        || !connection
            .state()
            .permissions
            .allows(Permission::SendToGroup, group)
    {
        tracing::debug!(connection_id = %connection.id, "a will without the permission to publish it was dropped");
        return;
    }
    let (data_type, payload) = payload_of(will.content_type.as_deref(), will.payload.clone())
        .unwrap_or((DataType::Binary, will.payload));
    let metadata = as_metadata(will.user_properties);
    let mut message = Outgoing::group(group.into(), connection.user_id.clone(), data_type, payload)
        .with_sender(Arc::clone(&connection.id), false)
        .with_metadata(metadata);
    message.at_most_once = will.at_most_once;
    if let Some(expiry) = will.expiry_secs {
        message = message.with_ttl(Duration::from_secs(u64::from(expiry)));
    }
    tracing::debug!(connection_id = %connection.id, "will published");
    send_to_group(state, hub, group, message);
}

/// The answer to an MQTT client's user event, on `…/{event}/succeeded` or `…/failed`.
pub(super) fn event_answer(
    connection: &Connection,
    event: &str,
    outcome: Result<(Option<(DataType, Bytes)>, Metadata), String>,
) {
    let message = match outcome {
        Ok((reply, metadata)) => {
            let (data_type, body) = reply.unwrap_or((DataType::Binary, Bytes::new()));
            Outgoing::server(data_type, body)
                .into_group(wire::event_answer_topic(event, true).into())
                .with_metadata(metadata)
        }
        Err(reason) => Outgoing::server(DataType::Text, Bytes::from(reason))
            .into_group(wire::event_answer_topic(event, false).into()),
    };
    connection.deliver(&message);
}
