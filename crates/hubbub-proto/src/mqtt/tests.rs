use super::*;
use bytes::Buf;
use mqtt5_protocol::types::{ConnectOptions, WillMessage};
use proptest::prelude::*;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Fixed test vectors (hand-written, MQTT 3.1.1).
// ---------------------------------------------------------------------------------------------

/// CONNECT, MQTT 3.1.1: client id "abc", clean session, keep-alive 60.
const CONNECT_V311: &[u8] = &[
    0x10, 0x0f, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x03, b'a', b'b',
    b'c',
];
/// CONNECT, MQTT 3.1 ("MQIsdp", protocol level 3): client id "abc".
const CONNECT_V31: &[u8] = &[
    0x10, 0x11, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x3c, 0x00, 0x03,
    b'a', b'b', b'c',
];
/// SUBSCRIBE, MQTT 3.1.1: packet id 10, "a/b" at QoS 1.
const SUBSCRIBE_V311: &[u8] = &[0x82, 0x08, 0x00, 0x0a, 0x00, 0x03, b'a', b'/', b'b', 0x01];
/// PUBLISH, MQTT 3.1.1: QoS 1, topic "a/b", packet id 7, payload "hi".
const PUBLISH_V311: &[u8] = &[
    0x32, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x07, b'h', b'i',
];
const PINGREQ: &[u8] = &[0xc0, 0x00];
const DISCONNECT_V311: &[u8] = &[0xe0, 0x00];

fn stream_v311() -> Vec<u8> {
    [
        CONNECT_V311,
        SUBSCRIBE_V311,
        PUBLISH_V311,
        PINGREQ,
        DISCONNECT_V311,
    ]
    .concat()
}

/// A stream of MQTT 5 client packets built with the codec itself.
fn stream_v5() -> Vec<u8> {
    let connect = ConnectPacket::new(
        ConnectOptions::new("client1")
            .with_session_expiry_interval(300)
            .with_keep_alive(Duration::from_secs(30))
            .with_will(WillMessage::new("last/words", b"bye".to_vec()).with_qos(QoS::AtLeastOnce)),
    );
    let publish = PublishPacket::new("room/1", Bytes::from_static(b"{\"a\":1}"), QoS::AtLeastOnce)
        .with_packet_id(5)
        .with_content_type("application/json".into())
        .with_user_property("k".into(), "v".into());
    let subscribe = SubscribePacket::new(3).add_filter("room/1", QoS::AtLeastOnce);
    let unsubscribe = UnsubscribePacket::new(4).add_filter("room/1");
    let puback = PubAckPacket::new(9);
    [
        encode(&connect),
        encode(&publish),
        encode(&subscribe),
        PINGREQ.to_vec(),
        encode(&unsubscribe),
        encode(&puback),
        encode(&DisconnectPacket::new(ReasonCode::Success)),
    ]
    .concat()
}

// ---------------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------------

fn encode(packet: &impl MqttPacket) -> Vec<u8> {
    let mut buffer = BytesMut::new();
    packet.encode(&mut buffer).expect("encodes");
    buffer.to_vec()
}

/// Decodes one whole packet with the codec, independently of the Framer.
fn decode_frame(frame: &[u8], version: u8) -> Packet {
    let mut buffer = Bytes::copy_from_slice(frame);
    let header = FixedHeader::decode(&mut buffer).expect("fixed header");
    assert_eq!(
        header.remaining_length as usize,
        buffer.len(),
        "remaining length of {frame:02x?}"
    );
    let packet =
        Packet::decode_from_body_with_version(header.packet_type, &header, &mut buffer, version)
            .unwrap_or_else(|e| panic!("{frame:02x?} does not decode: {e}"));
    assert_eq!(buffer.remaining(), 0, "bytes left after {frame:02x?}");
    packet
}

fn as_publish(packet: Packet) -> PublishPacket {
    match packet {
        Packet::Publish(p) => p,
        other => panic!("expected PUBLISH, got {}", other.packet_type_name()),
    }
}

fn as_connack(packet: Packet) -> ConnAckPacket {
    match packet {
        Packet::ConnAck(p) => p,
        other => panic!("expected CONNACK, got {}", other.packet_type_name()),
    }
}

fn sorted_properties(properties: &Properties) -> String {
    let mut all: Vec<String> = properties
        .iter()
        .map(|(id, value)| format!("{id:?}={value:?}"))
        .collect();
    all.sort();
    all.join(",")
}

/// A deterministic description of a packet (properties are a hash map, so `Debug` is not).
fn describe(packet: &Packet) -> String {
    match packet {
        Packet::Connect(c) => format!(
            "CONNECT v{} clean={} ka={} id={:?} user={:?} pw={:?} will={:?} props=[{}] will_props=[{}]",
            c.protocol_version,
            c.clean_start,
            c.keep_alive,
            c.client_id,
            c.username,
            c.password,
            c.will,
            sorted_properties(&c.properties),
            sorted_properties(&c.will_properties)
        ),
        Packet::Publish(p) => format!(
            "PUBLISH v{} topic={:?} id={:?} qos={:?} dup={} retain={} payload={:?} props=[{}]",
            p.protocol_version,
            p.topic_name,
            p.packet_id,
            p.qos,
            p.dup,
            p.retain,
            p.payload,
            sorted_properties(&p.properties)
        ),
        Packet::Subscribe(s) => format!(
            "SUBSCRIBE id={} filters={:?} props=[{}]",
            s.packet_id,
            s.filters,
            sorted_properties(&s.properties)
        ),
        Packet::Unsubscribe(u) => format!(
            "UNSUBSCRIBE id={} filters={:?} props=[{}]",
            u.packet_id,
            u.filters,
            sorted_properties(&u.properties)
        ),
        Packet::PubAck(a) => format!(
            "PUBACK id={} code={:?} props=[{}]",
            a.packet_id,
            a.reason_code,
            sorted_properties(&a.properties)
        ),
        Packet::Disconnect(d) => format!(
            "DISCONNECT code={:?} props=[{}]",
            d.reason_code,
            sorted_properties(&d.properties)
        ),
        other => other.packet_type_name().to_string(),
    }
}

fn describe_all(packets: &[Packet]) -> Vec<String> {
    packets.iter().map(describe).collect()
}

/// `Result<Vec<Packet>, _>` has no PartialEq (Packet has none); compare errors only.
trait ErrOnly {
    fn err_only(self) -> Option<FrameError>;
}
impl ErrOnly for Result<Vec<Packet>, FrameError> {
    fn err_only(self) -> Option<FrameError> {
        self.err()
    }
}

/// Pushes `chunks` one after the other, stopping at the first error.
fn push_chunks<'a>(
    framer: &mut Framer,
    chunks: impl IntoIterator<Item = &'a [u8]>,
    version: u8,
) -> Result<Vec<Packet>, FrameError> {
    let mut packets = Vec::new();
    for chunk in chunks {
        packets.extend(framer.push(chunk, version)?);
    }
    Ok(packets)
}

/// `data` cut at `cuts` (positions, in any order, may repeat).
fn split_at<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| (*c).min(data.len())).collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for cut in cuts {
        chunks.push(&data[start..cut]);
        start = cut;
    }
    chunks.push(&data[start..]);
    chunks
}

fn refused<T: std::fmt::Debug>(result: Result<T, Refusal>) -> ReasonCode {
    match result {
        Ok(accepted) => panic!("expected a refusal, accepted {accepted:?}"),
        Err(refusal) => {
            assert!(!refusal.reason.is_empty(), "a refusal says why");
            refusal.code
        }
    }
}

fn no_new_id() -> String {
    panic!("the closure must not be called for a client with an id")
}

fn v4_connect(id: &str) -> ConnectPacket {
    ConnectPacket::new_v311(ConnectOptions::new(id))
}

fn v5_connect(id: &str) -> ConnectPacket {
    ConnectPacket::new(ConnectOptions::new(id))
}

fn with_will(mut connect: ConnectPacket, will: WillMessage) -> ConnectPacket {
    connect.will = Some(will);
    connect
}

fn outbound<'a>(
    topic: &'a str,
    qos: QoS,
    payload: &'a Bytes,
    data_type: DataType,
    user_properties: &'a [(String, String)],
) -> Outbound<'a> {
    Outbound {
        topic,
        qos,
        payload,
        data_type,
        expiry_secs: None,
        user_properties,
        correlation_data: None,
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Every MQTT 5 reason code a CONNACK may carry, by the specification (3.2.2.2).
const CONNACK_REFUSALS: [u8; 21] = [
    0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8c, 0x90, 0x95, 0x97, 0x99,
    0x9a, 0x9b, 0x9c, 0x9d, 0x9f,
];

// ---------------------------------------------------------------------------------------------
// Framer.
// ---------------------------------------------------------------------------------------------

#[test]
fn framer_reads_a_3_1_1_stream_in_one_push() {
    let mut framer = Framer::new(1024);
    let packets = framer.push(&stream_v311(), V311).unwrap();
    assert_eq!(packets.len(), 5);
    assert_eq!(framer.buffered(), 0);

    let Packet::Connect(connect) = &packets[0] else {
        panic!("{}", describe(&packets[0]))
    };
    assert_eq!(connect.protocol_version, V311);
    assert_eq!(connect.client_id, "abc");
    assert_eq!(connect.keep_alive, 60);
    assert!(connect.clean_start);
    assert!(connect.will.is_none());

    let Packet::Subscribe(subscribe) = &packets[1] else {
        panic!("{}", describe(&packets[1]))
    };
    assert_eq!(subscribe.packet_id, 10);
    assert_eq!(subscribe.filters.len(), 1);
    assert_eq!(subscribe.filters[0].filter, "a/b");
    assert_eq!(subscribe.filters[0].options.qos, QoS::AtLeastOnce);

    let Packet::Publish(publish) = &packets[2] else {
        panic!("{}", describe(&packets[2]))
    };
    assert_eq!(publish.topic_name, "a/b");
    assert_eq!(publish.packet_id, Some(7));
    assert_eq!(publish.qos, QoS::AtLeastOnce);
    assert_eq!(&publish.payload[..], b"hi");
    assert!(!publish.dup && !publish.retain);

    assert!(matches!(packets[3], Packet::PingReq));
    assert!(matches!(packets[4], Packet::Disconnect(_)));
}

#[test]
fn framer_reads_an_mqtt5_stream_in_one_push() {
    let mut framer = Framer::new(4096);
    let packets = framer.push(&stream_v5(), V5).unwrap();
    let names: Vec<_> = packets.iter().map(Packet::packet_type_name).collect();
    assert_eq!(
        names,
        [
            "CONNECT",
            "PUBLISH",
            "SUBSCRIBE",
            "PINGREQ",
            "UNSUBSCRIBE",
            "PUBACK",
            "DISCONNECT"
        ]
    );
    let Packet::Connect(connect) = &packets[0] else {
        unreachable!()
    };
    assert_eq!(connect.protocol_version, V5);
    assert_eq!(connect.client_id, "client1");
    assert_eq!(
        int_property(&connect.properties, PropertyId::SessionExpiryInterval),
        Some(300)
    );
    let will = connect.will.as_ref().expect("a will");
    assert_eq!(will.topic, "last/words");
    assert_eq!(will.payload, b"bye");
    let Packet::Publish(publish) = &packets[1] else {
        unreachable!()
    };
    assert_eq!(publish.packet_id, Some(5));
    assert_eq!(
        string_property(&publish.properties, PropertyId::ContentType),
        Some("application/json")
    );
    assert_eq!(user_properties(&publish.properties), pairs(&[("k", "v")]));
    assert_eq!(framer.buffered(), 0);
}

#[test]
fn framer_split_at_every_byte_boundary_reads_the_same_packets() {
    for (stream, version) in [(stream_v311(), V311), (stream_v5(), V5)] {
        let whole = describe_all(&Framer::new(4096).push(&stream, version).unwrap());
        assert!(!whole.is_empty());
        for cut in 0..=stream.len() {
            let mut framer = Framer::new(4096);
            let first = framer.push(&stream[..cut], version).unwrap();
            let second = framer.push(&stream[cut..], version).unwrap();
            let mut packets = describe_all(&first);
            packets.extend(describe_all(&second));
            assert_eq!(packets, whole, "split at byte {cut}");
            assert_eq!(framer.buffered(), 0);
        }
    }
}

#[test]
fn framer_fed_one_byte_at_a_time_reads_the_same_packets() {
    for (stream, version) in [(stream_v311(), V311), (stream_v5(), V5)] {
        let whole = describe_all(&Framer::new(4096).push(&stream, version).unwrap());
        let mut framer = Framer::new(4096);
        let mut packets = Vec::new();
        let mut since_last_packet = 0;
        for byte in &stream {
            let got = framer.push(std::slice::from_ref(byte), version).unwrap();
            assert!(got.len() <= 1);
            since_last_packet += 1;
            if got.is_empty() {
                assert_eq!(framer.buffered(), since_last_packet);
            } else {
                assert_eq!(framer.buffered(), 0);
                since_last_packet = 0;
            }
            packets.extend(describe_all(&got));
        }
        assert_eq!(packets, whole);
    }
}

#[test]
fn framer_splits_three_ways_too() {
    let stream = stream_v311();
    let whole = describe_all(&Framer::new(64).push(&stream, V311).unwrap());
    for a in 0..=stream.len() {
        for b in a..=stream.len() {
            let mut framer = Framer::new(64);
            let packets = push_chunks(
                &mut framer,
                [&stream[..a], &stream[a..b], &stream[b..]],
                V311,
            )
            .unwrap();
            assert_eq!(describe_all(&packets), whole, "split at {a} and {b}");
        }
    }
}

#[test]
fn framer_keeps_a_partial_packet_for_the_next_push() {
    let mut framer = Framer::new(1024);
    let stream = [PINGREQ, &PUBLISH_V311[..4]].concat();
    let packets = framer.push(&stream, V311).unwrap();
    assert_eq!(packets.len(), 1);
    assert_eq!(framer.buffered(), 4);
    let packets = framer.push(&PUBLISH_V311[4..], V311).unwrap();
    assert_eq!(packets.len(), 1);
    assert_eq!(
        as_publish(packets.into_iter().next().unwrap()).packet_id,
        Some(7)
    );
    assert_eq!(framer.buffered(), 0);
    assert!(framer.push(&[], V311).unwrap().is_empty());
}

#[test]
fn framer_clear_drops_a_partial_packet() {
    let mut framer = Framer::new(1024);
    assert!(framer.push(&CONNECT_V311[..7], V311).unwrap().is_empty());
    assert_eq!(framer.buffered(), 7);
    framer.clear();
    assert_eq!(framer.buffered(), 0);
    let packets = framer.push(PUBLISH_V311, V311).unwrap();
    assert_eq!(packets.len(), 1);
    assert!(matches!(packets[0], Packet::Publish(_)));
}

#[test]
fn framer_refuses_a_packet_larger_than_max_before_its_body() {
    // 3-byte remaining length 0x1fffff: refused as soon as the length is read.
    let mut framer = Framer::new(100);
    assert_eq!(
        framer.push(&[0x30, 0xff, 0xff, 0x7f], V311).err_only(),
        Some(FrameError::TooLarge(4 + 0x1f_ffff, 100))
    );
    assert!(framer.buffered() <= 4);

    // The length arriving a byte at a time: nothing is known until its last byte.
    let mut framer = Framer::new(100);
    assert!(framer.push(&[0x30], V311).unwrap().is_empty());
    assert!(framer.push(&[0x80], V311).unwrap().is_empty());
    let err = framer.push(&[0x01], V311).unwrap_err();
    assert_eq!(err, FrameError::TooLarge(3 + 128, 100));
    assert!(framer.buffered() <= 3);
}

#[test]
fn framer_max_packet_is_inclusive() {
    // PUBLISH QoS 0, topic "t": 2 header bytes + 3 topic bytes + payload.
    let packet = |payload: usize| {
        encode(&PublishPacket::new_v311(
            "t",
            vec![b'x'; payload],
            QoS::AtMostOnce,
        ))
    };
    let exact = packet(15);
    assert_eq!(exact.len(), 20);
    let packets = Framer::new(20).push(&exact, V311).unwrap();
    assert_eq!(packets.len(), 1);

    let over = packet(16);
    assert_eq!(over.len(), 21);
    // Refused on its header alone.
    let mut framer = Framer::new(20);
    assert_eq!(
        framer.push(&over[..2], V311).err_only(),
        Some(FrameError::TooLarge(21, 20))
    );
}

#[test]
fn framer_waits_for_a_4_byte_remaining_length_body() {
    // The largest remaining length MQTT has (268,435,455) is read, then waited for.
    let mut framer = Framer::new(usize::MAX);
    assert!(framer
        .push(&[0x30, 0xff, 0xff, 0xff, 0x7f], V311)
        .unwrap()
        .is_empty());
    assert_eq!(framer.buffered(), 5);
    assert_eq!(
        Framer::new(1000)
            .push(&[0x30, 0xff, 0xff, 0xff, 0x7f], V311)
            .err_only(),
        Some(FrameError::TooLarge(5 + 268_435_455, 1000))
    );
}

#[test]
fn framer_refuses_a_5_byte_remaining_length() {
    let mut framer = Framer::new(usize::MAX);
    assert!(matches!(
        framer.push(&[0x30, 0x80, 0x80, 0x80, 0x80, 0x01], V311),
        Err(FrameError::Malformed(_))
    ));

    // Known to be malformed as soon as the fourth length byte has its continuation bit.
    let mut framer = Framer::new(usize::MAX);
    assert!(framer
        .push(&[0x30, 0x80, 0x80, 0x80], V311)
        .unwrap()
        .is_empty());
    assert!(matches!(
        framer.push(&[0x80], V311),
        Err(FrameError::Malformed(_))
    ));
}

#[test]
fn framer_refuses_packet_type_0() {
    for bytes in [&[0x00, 0x00][..], &[0x00, 0x02, 0x01, 0x02], &[0x0f, 0x00]] {
        match Framer::new(1024).push(bytes, V5) {
            Err(FrameError::Malformed(why)) => assert!(why.contains("type 0"), "{why}"),
            other => panic!("{bytes:02x?}: {:?}", other.err_only()),
        }
    }
}

#[test]
fn framer_refuses_bytes_after_a_packets_end() {
    // PINGREQ has no body.
    match Framer::new(1024).push(&[0xc0, 0x01, 0x00], V311) {
        Err(FrameError::Malformed(why)) => assert!(why.contains("1 bytes after"), "{why}"),
        other => panic!("{:?}", other.err_only()),
    }
    // A CONNECT with two bytes after its client id (no will, username or password flags).
    let mut connect = CONNECT_V311.to_vec();
    connect[1] += 2;
    connect.extend_from_slice(b"xy");
    match Framer::new(1024).push(&connect, V5) {
        Err(FrameError::Malformed(why)) => {
            assert!(
                why.contains("2 bytes after") && why.contains("CONNECT"),
                "{why}"
            )
        }
        other => panic!("{:?}", other.err_only()),
    }
    // A DISCONNECT: reason code, empty properties, then a stray byte.
    assert!(matches!(
        Framer::new(1024).push(&[0xe0, 0x03, 0x00, 0x00, 0x00], V5),
        Err(FrameError::Malformed(_))
    ));
}

#[test]
fn framer_refuses_a_body_shorter_than_its_fields() {
    // SUBSCRIBE whose topic filter length runs past the packet's end.
    assert!(matches!(
        Framer::new(1024).push(&[0x82, 0x05, 0x00, 0x01, 0x00, 0x09, b'a'], V311),
        Err(FrameError::Malformed(_))
    ));
    // SUBSCRIBE with the wrong fixed-header flags.
    let mut subscribe = SUBSCRIBE_V311.to_vec();
    subscribe[0] = 0x80;
    assert!(matches!(
        Framer::new(1024).push(&subscribe, V311),
        Err(FrameError::Malformed(_))
    ));
    // PUBLISH at QoS 3.
    let mut publish = PUBLISH_V311.to_vec();
    publish[0] = 0x36;
    assert!(matches!(
        Framer::new(1024).push(&publish, V311),
        Err(FrameError::Malformed(_))
    ));
}

#[test]
fn framer_refuses_mqtt_3_1_and_other_protocol_levels() {
    for version in [V311, V5] {
        assert_eq!(
            Framer::new(1024).push(CONNECT_V31, version).err_only(),
            Some(FrameError::UnsupportedVersion(3))
        );
    }
    let mut level6 = CONNECT_V311.to_vec();
    level6[8] = 6;
    assert_eq!(
        Framer::new(1024).push(&level6, V5).err_only(),
        Some(FrameError::UnsupportedVersion(6))
    );
    // Split: the level is judged once the whole CONNECT is in.
    let mut framer = Framer::new(1024);
    assert!(framer.push(&CONNECT_V31[..9], V5).unwrap().is_empty());
    assert_eq!(
        framer.push(&CONNECT_V31[9..], V5).err_only(),
        Some(FrameError::UnsupportedVersion(3))
    );
    // Levels 4 and 5 are read.
    let mut level5 = ConnectPacket::new(ConnectOptions::new("x"));
    level5.keep_alive = 10;
    assert!(Framer::new(1024).push(&encode(&level5), V5).is_ok());
    assert!(Framer::new(1024).push(CONNECT_V311, V5).is_ok());
}

#[test]
fn framer_stops_at_the_first_error() {
    let stream = [PINGREQ, &[0x00, 0x00], PUBLISH_V311].concat();
    assert!(matches!(
        Framer::new(1024).push(&stream, V311),
        Err(FrameError::Malformed(_))
    ));
}

#[test]
fn frame_errors_display() {
    assert_eq!(
        FrameError::TooLarge(300, 200).to_string(),
        "a packet of 300 bytes is larger than the 200 bytes allowed"
    );
    assert!(FrameError::UnsupportedVersion(3).to_string().contains('3'));
}

// ---------------------------------------------------------------------------------------------
// check_connect.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_valid_3_1_1_connect_is_accepted() {
    let packets = Framer::new(1024).push(CONNECT_V311, V5).unwrap();
    let Packet::Connect(connect) = &packets[0] else {
        unreachable!()
    };
    assert_eq!(
        check_connect(connect, no_new_id),
        Ok(Accepted {
            client_id: "abc".into(),
            assigned: false,
            keep_alive: 60,
            session_expiry: 0,
        })
    );
}

#[test]
fn a_valid_mqtt5_connect_is_accepted() {
    let connect = ConnectPacket::new(
        ConnectOptions::new("Device42")
            .with_keep_alive(Duration::from_secs(45))
            .with_session_expiry_interval(3600),
    );
    // Through the wire and back.
    let packets = Framer::new(1024).push(&encode(&connect), V5).unwrap();
    let Packet::Connect(connect) = &packets[0] else {
        unreachable!()
    };
    assert_eq!(
        check_connect(connect, no_new_id),
        Ok(Accepted {
            client_id: "Device42".into(),
            assigned: false,
            keep_alive: 45,
            session_expiry: 3600,
        })
    );
    // No session expiry property: the session ends with the connection.
    assert_eq!(
        check_connect(&v5_connect("d"), no_new_id)
            .unwrap()
            .session_expiry,
        0
    );
}

#[test]
fn session_expiry_of_3_1_1_follows_clean_session() {
    let mut connect = v4_connect("abc");
    assert_eq!(
        check_connect(&connect, no_new_id).unwrap().session_expiry,
        0
    );
    connect.clean_start = false;
    assert_eq!(
        check_connect(&connect, no_new_id).unwrap().session_expiry,
        u32::MAX
    );
    // MQTT 5 without clean start still takes the property, not u32::MAX.
    let mut connect = v5_connect("abc");
    connect.clean_start = false;
    assert_eq!(
        check_connect(&connect, no_new_id).unwrap().session_expiry,
        0
    );
}

#[test]
fn an_empty_client_id_gets_an_assigned_one() {
    for mut connect in [v4_connect(""), v5_connect("")] {
        connect.clean_start = true;
        let accepted = check_connect(&connect, || "assigned1".to_string()).unwrap();
        assert_eq!(accepted.client_id, "assigned1");
        assert!(accepted.assigned);
    }
    // MQTT 5 may resume a session without an id: the service assigns one.
    let mut connect = v5_connect("");
    connect.clean_start = false;
    let accepted = check_connect(&connect, || "assigned2".to_string()).unwrap();
    assert_eq!(
        (accepted.client_id.as_str(), accepted.assigned),
        ("assigned2", true)
    );
}

#[test]
fn an_empty_client_id_without_clean_session_is_refused_on_3_1_1() {
    let mut connect = v4_connect("");
    connect.clean_start = false;
    let mut called = false;
    let code = refused(check_connect(&connect, || {
        called = true;
        "x".into()
    }));
    assert_eq!(code, ReasonCode::ClientIdentifierNotValid);
    assert!(!called);
    assert_eq!(v311_code(code), 2);
}

#[test]
fn client_ids_must_be_ascii_letters_and_digits() {
    for bad in [
        "a-b",
        "a b",
        "a/b",
        "a_b",
        "é",
        "abc\u{0663}",
        "a.b",
        "ABC!",
        " ",
    ] {
        for connect in [v4_connect(bad), v5_connect(bad)] {
            assert_eq!(
                refused(check_connect(&connect, no_new_id)),
                ReasonCode::ClientIdentifierNotValid,
                "{bad:?}"
            );
        }
    }
    for good in ["a", "Z9", "0", "abcXYZ0123456789"] {
        assert_eq!(
            check_connect(&v4_connect(good), no_new_id)
                .unwrap()
                .client_id,
            good
        );
    }
}

#[test]
fn client_ids_are_at_most_128_characters() {
    let longest = "a".repeat(MAX_CLIENT_ID);
    assert_eq!(MAX_CLIENT_ID, 128);
    assert_eq!(
        check_connect(&v5_connect(&longest), no_new_id)
            .unwrap()
            .client_id,
        longest
    );
    let too_long = "a".repeat(MAX_CLIENT_ID + 1);
    for connect in [v4_connect(&too_long), v5_connect(&too_long)] {
        assert_eq!(
            refused(check_connect(&connect, no_new_id)),
            ReasonCode::ClientIdentifierNotValid
        );
    }
}

#[test]
fn keep_alive_rules_for_3_1_1() {
    for keep_alive in [0, MAX_KEEP_ALIVE_SECS + 1, u16::MAX] {
        let mut connect = v4_connect("abc");
        connect.keep_alive = keep_alive;
        assert_eq!(
            refused(check_connect(&connect, no_new_id)),
            ReasonCode::ProtocolError,
            "keep-alive {keep_alive}"
        );
    }
    for keep_alive in [1, 60, MAX_KEEP_ALIVE_SECS] {
        let mut connect = v4_connect("abc");
        connect.keep_alive = keep_alive;
        assert_eq!(
            check_connect(&connect, no_new_id).unwrap().keep_alive,
            keep_alive
        );
    }
}

#[test]
fn keep_alive_is_clamped_for_mqtt5() {
    for (asked, enforced) in [
        (0, 0),
        (1, 1),
        (MAX_KEEP_ALIVE_SECS, MAX_KEEP_ALIVE_SECS),
        (MAX_KEEP_ALIVE_SECS + 1, MAX_KEEP_ALIVE_SECS),
        (u16::MAX, MAX_KEEP_ALIVE_SECS),
    ] {
        let mut connect = v5_connect("abc");
        connect.keep_alive = asked;
        assert_eq!(
            check_connect(&connect, no_new_id).unwrap().keep_alive,
            enforced,
            "asked {asked}"
        );
    }
}

#[test]
fn will_topics_are_checked() {
    let cases: [(String, Option<ReasonCode>); 11] = [
        ("".into(), Some(ReasonCode::TopicNameInvalid)),
        ("   ".into(), Some(ReasonCode::TopicNameInvalid)),
        ("\t".into(), Some(ReasonCode::TopicNameInvalid)),
        ("a/+".into(), Some(ReasonCode::TopicNameInvalid)),
        ("a/#".into(), Some(ReasonCode::TopicNameInvalid)),
        ("$SYS/x".into(), Some(ReasonCode::TopicNameInvalid)),
        (
            "a".repeat(MAX_WILL_TOPIC + 1),
            Some(ReasonCode::TopicNameInvalid),
        ),
        ("a".repeat(MAX_WILL_TOPIC), None),
        // Characters, not bytes.
        ("é".repeat(MAX_WILL_TOPIC), None),
        ("last/words".into(), None),
        (format!("{EVENTS_TOPIC_PREFIX}gone"), None),
    ];
    for (topic, expected) in cases {
        for connect in [v4_connect("abc"), v5_connect("abc")] {
            let connect = with_will(connect, WillMessage::new(topic.clone(), b"x".to_vec()));
            let result = check_connect(&connect, no_new_id);
            match expected {
                Some(code) => assert_eq!(refused(result), code, "{topic:?}"),
                None => assert!(result.is_ok(), "{topic:?}: {result:?}"),
            }
        }
    }
}

#[test]
fn will_payload_qos_and_retain_are_checked() {
    let will = |payload: usize| WillMessage::new("t", vec![0u8; payload]);
    for connect in [v4_connect("abc"), v5_connect("abc")] {
        assert!(check_connect(
            &with_will(connect.clone(), will(MAX_WILL_PAYLOAD)),
            no_new_id
        )
        .is_ok());
        assert_eq!(
            refused(check_connect(
                &with_will(connect.clone(), will(MAX_WILL_PAYLOAD + 1)),
                no_new_id
            )),
            ReasonCode::PacketTooLarge
        );
        assert_eq!(
            refused(check_connect(
                &with_will(connect.clone(), will(1).with_qos(QoS::ExactlyOnce)),
                no_new_id
            )),
            ReasonCode::QoSNotSupported
        );
        assert!(check_connect(
            &with_will(connect.clone(), will(1).with_qos(QoS::AtLeastOnce)),
            no_new_id
        )
        .is_ok());
        assert_eq!(
            refused(check_connect(
                &with_will(connect.clone(), will(1).with_retain(true)),
                no_new_id
            )),
            ReasonCode::RetainNotSupported
        );
    }
}

#[test]
fn a_will_read_off_the_wire_is_checked() {
    let connect = ConnectPacket::new(
        ConnectOptions::new("abc")
            .with_will(WillMessage::new("w", b"x".to_vec()).with_qos(QoS::ExactlyOnce)),
    );
    let packets = Framer::new(1024).push(&encode(&connect), V5).unwrap();
    let Packet::Connect(connect) = &packets[0] else {
        unreachable!()
    };
    assert_eq!(
        refused(check_connect(connect, no_new_id)),
        ReasonCode::QoSNotSupported
    );
}

#[test]
fn enhanced_authentication_is_refused() {
    let connect =
        ConnectPacket::new(ConnectOptions::new("abc").with_authentication_method("SCRAM"));
    assert_eq!(
        refused(check_connect(&connect, no_new_id)),
        ReasonCode::BadAuthenticationMethod
    );
}

// ---------------------------------------------------------------------------------------------
// Topics.
// ---------------------------------------------------------------------------------------------

#[test]
fn topic_names() {
    for good in [
        "a",
        "a/b",
        "/",
        "a//b",
        "room 1",
        "ünï/côdé",
        "a$",
        "$webpubsub/server/events/myEvent",
    ] {
        assert_eq!(check_topic_name(good), Ok(()), "{good:?}");
    }
    for bad in [
        "",
        "+",
        "#",
        "a/+/b",
        "a/#",
        "a+b",
        "a\0b",
        "$SYS/broker",
        "$",
        SERVER_MESSAGES_TOPIC,
        "$webpubsub/server/events/",
        "$webpubsub/server/events/a/b",
        "$webpubsub/server/events/e/succeeded",
        "$share/g/t",
    ] {
        assert!(check_topic_name(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn topic_name_errors_show_at_most_64_characters() {
    let topic = format!("${}", "x".repeat(500));
    let error = check_topic_name(&topic).unwrap_err();
    assert!(error.contains(&topic[..64]));
    assert!(!error.contains(&topic[..65]));
}

#[test]
fn topic_filters() {
    for good in [
        "a",
        "a/b",
        "/",
        SERVER_MESSAGES_TOPIC,
        "$webpubsub/server/events/e/succeeded",
        "$webpubsub/server/events/e/failed",
    ] {
        assert_eq!(check_topic_filter(good), Ok(()), "{good:?}");
    }
    let cases = [
        ("$share/g/t", SubAckCode::SharedSubscriptionsNotSupported),
        ("$share/g/+", SubAckCode::SharedSubscriptionsNotSupported),
        ("+", SubAckCode::WildcardSubscriptionsNotSupported),
        ("#", SubAckCode::WildcardSubscriptionsNotSupported),
        ("a/+/b", SubAckCode::WildcardSubscriptionsNotSupported),
        ("a/#", SubAckCode::WildcardSubscriptionsNotSupported),
        ("$SYS/#", SubAckCode::WildcardSubscriptionsNotSupported),
        ("", SubAckCode::TopicFilterInvalid),
        ("a\0", SubAckCode::TopicFilterInvalid),
        ("$SYS/broker", SubAckCode::TopicFilterInvalid),
        ("$share", SubAckCode::TopicFilterInvalid),
        ("$webpubsub/server/events/e", SubAckCode::TopicFilterInvalid),
        (
            "$webpubsub/server/events/e/other",
            SubAckCode::TopicFilterInvalid,
        ),
        (
            "$webpubsub/server/events//succeeded",
            SubAckCode::TopicFilterInvalid,
        ),
        (
            "$webpubsub/server/events/a/b/failed",
            SubAckCode::TopicFilterInvalid,
        ),
        (
            "$webpubsub/server/messages/x",
            SubAckCode::TopicFilterInvalid,
        ),
    ];
    for (filter, code) in cases {
        match check_topic_filter(filter) {
            Err((got, why)) => {
                assert_eq!(got, code, "{filter:?}");
                assert!(!why.is_empty());
            }
            Ok(()) => panic!("{filter:?} accepted"),
        }
    }
}

#[test]
fn event_names_and_answers() {
    assert_eq!(EVENTS_TOPIC_PREFIX, "$webpubsub/server/events/");
    assert_eq!(
        event_name("$webpubsub/server/events/myEvent"),
        Some("myEvent")
    );
    assert_eq!(event_name("$webpubsub/server/events/a b"), Some("a b"));
    assert_eq!(event_name("$webpubsub/server/events/"), None);
    assert_eq!(event_name("$webpubsub/server/events/a/b"), None);
    assert_eq!(event_name("$webpubsub/server/events"), None);
    assert_eq!(event_name("webpubsub/server/events/e"), None);
    assert_eq!(event_name("myEvent"), None);

    let succeeded = event_answer_topic("myEvent", true);
    let failed = event_answer_topic("myEvent", false);
    assert_eq!(succeeded, "$webpubsub/server/events/myEvent/succeeded");
    assert_eq!(failed, "$webpubsub/server/events/myEvent/failed");
    // Clients subscribe to answers but cannot publish to them.
    for answer in [&succeeded, &failed] {
        assert_eq!(check_topic_filter(answer), Ok(()));
        assert_eq!(event_name(answer), None);
        assert!(check_topic_name(answer).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// Content types.
// ---------------------------------------------------------------------------------------------

const ALL_DATA_TYPES: [DataType; 4] = [
    DataType::Text,
    DataType::Json,
    DataType::Binary,
    DataType::Protobuf,
];

#[test]
fn content_types_round_trip() {
    for data_type in ALL_DATA_TYPES {
        assert_eq!(data_type_of(Some(content_type_of(data_type))), data_type);
    }
    let all: std::collections::HashSet<_> =
        ALL_DATA_TYPES.iter().map(|d| content_type_of(*d)).collect();
    assert_eq!(all.len(), 4);
}

#[test]
fn content_types_with_parameters_and_case() {
    let cases = [
        (None, DataType::Binary),
        (Some("application/json"), DataType::Json),
        (Some("application/json; charset=utf-8"), DataType::Json),
        (Some("Application/JSON;charset=UTF-8"), DataType::Json),
        (Some("  application/json  ; x=y"), DataType::Json),
        (Some("text/plain"), DataType::Text),
        (Some("TEXT/PLAIN; charset=us-ascii"), DataType::Text),
        (Some("application/x-protobuf"), DataType::Protobuf),
        (Some("Application/X-Protobuf; proto=x"), DataType::Protobuf),
        (Some("application/octet-stream"), DataType::Binary),
        (Some(""), DataType::Binary),
        (Some("text/html"), DataType::Binary),
        (Some("application/jsonx"), DataType::Binary),
        (Some("application/json+x"), DataType::Binary),
        (Some("; application/json"), DataType::Binary),
        (Some("text"), DataType::Binary),
    ];
    for (content_type, data_type) in cases {
        assert_eq!(data_type_of(content_type), data_type, "{content_type:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// CONNACK and refusals.
// ---------------------------------------------------------------------------------------------

#[test]
fn connack_3_1_1_is_four_bytes() {
    let info = ConnAckInfo {
        assigned_client_id: Some("ignored"),
        reason: Some("ignored"),
        max_packet: 1024,
        ..Default::default()
    };
    let cases = [
        (ReasonCode::Success, 0),
        (ReasonCode::UnsupportedProtocolVersion, 1),
        (ReasonCode::ClientIdentifierNotValid, 2),
        (ReasonCode::ServerUnavailable, 3),
        (ReasonCode::BadUsernameOrPassword, 4),
        (ReasonCode::NotAuthorized, 5),
        (ReasonCode::Banned, 5),
        (ReasonCode::ProtocolError, 3),
        (ReasonCode::QuotaExceeded, 3),
        (ReasonCode::UnspecifiedError, 3),
        (ReasonCode::TopicNameInvalid, 3),
    ];
    for (code, return_code) in cases {
        assert_eq!(v311_code(code), return_code, "{code:?}");
        assert_eq!(
            &connack(V311, false, code, &info)[..],
            [0x20, 0x02, 0x00, return_code],
            "{code:?}"
        );
        // The codec reads it back as the 3.1.1 return code it is.
        let decoded = as_connack(decode_frame(&connack(V311, false, code, &info), V311));
        assert_eq!(v311_code(decoded.reason_code), return_code);
    }
    assert_eq!(
        &connack(V311, true, ReasonCode::Success, &info)[..],
        [0x20, 0x02, 0x01, 0x00]
    );
}

#[test]
fn connack_mqtt5_accepted_tells_the_services_limits() {
    let users = pairs(&[("region", "eu"), ("region", "us"), ("a", "b")]);
    let info = ConnAckInfo {
        assigned_client_id: Some("gen123"),
        server_keep_alive: Some(MAX_KEEP_ALIVE_SECS),
        session_expiry: Some(3600),
        reason: Some("welcome"),
        user_properties: &users,
        max_packet: 65536,
    };
    let frame = connack(V5, true, ReasonCode::Success, &info);
    let packet = as_connack(decode_frame(&frame, V5));
    assert_eq!(packet.reason_code, ReasonCode::Success);
    assert!(packet.session_present);
    let p = &packet.properties;
    assert_eq!(p.get_maximum_qos(), Some(1));
    for flag in [
        PropertyId::RetainAvailable,
        PropertyId::WildcardSubscriptionAvailable,
        PropertyId::SharedSubscriptionAvailable,
        PropertyId::SubscriptionIdentifierAvailable,
    ] {
        assert_eq!(p.get(flag), Some(&PropertyValue::Byte(0)), "{flag:?}");
    }
    assert_eq!(p.get_topic_alias_maximum(), Some(0));
    assert_eq!(p.get_maximum_packet_size(), Some(65536));
    assert_eq!(
        string_property(p, PropertyId::AssignedClientIdentifier),
        Some("gen123")
    );
    assert_eq!(p.get_server_keep_alive(), Some(MAX_KEEP_ALIVE_SECS));
    assert_eq!(
        int_property(p, PropertyId::SessionExpiryInterval),
        Some(3600)
    );
    assert_eq!(
        string_property(p, PropertyId::ReasonString),
        Some("welcome")
    );
    assert_eq!(user_properties(p), users);
}

#[test]
fn connack_mqtt5_accepted_without_extras() {
    let info = ConnAckInfo {
        max_packet: 1 << 20,
        ..Default::default()
    };
    let packet = as_connack(decode_frame(
        &connack(V5, false, ReasonCode::Success, &info),
        V5,
    ));
    assert!(!packet.session_present);
    let p = &packet.properties;
    assert_eq!(p.get_maximum_qos(), Some(1));
    assert_eq!(p.get_maximum_packet_size(), Some(1 << 20));
    for absent in [
        PropertyId::AssignedClientIdentifier,
        PropertyId::ServerKeepAlive,
        PropertyId::SessionExpiryInterval,
        PropertyId::ReasonString,
        PropertyId::UserProperty,
    ] {
        assert!(!p.contains(absent), "{absent:?}");
    }
}

#[test]
fn connack_mqtt5_refused_carries_only_the_reason() {
    let users = pairs(&[("why", "token expired")]);
    let info = ConnAckInfo {
        assigned_client_id: Some("gen123"),
        server_keep_alive: Some(10),
        session_expiry: Some(10),
        reason: Some("go away"),
        user_properties: &users,
        max_packet: 1024,
    };
    let packet = as_connack(decode_frame(
        &connack(V5, false, ReasonCode::NotAuthorized, &info),
        V5,
    ));
    assert_eq!(packet.reason_code, ReasonCode::NotAuthorized);
    let p = &packet.properties;
    assert_eq!(
        string_property(p, PropertyId::ReasonString),
        Some("go away")
    );
    assert_eq!(user_properties(p), users);
    for absent in [
        PropertyId::MaximumQoS,
        PropertyId::RetainAvailable,
        PropertyId::MaximumPacketSize,
        PropertyId::AssignedClientIdentifier,
        PropertyId::ServerKeepAlive,
        PropertyId::SessionExpiryInterval,
    ] {
        assert!(!p.contains(absent), "{absent:?}");
    }
}

#[test]
fn refusal_codes_for_3_1_1() {
    let cases = [
        (1, ReasonCode::UnsupportedProtocolVersion),
        (2, ReasonCode::ClientIdentifierNotValid),
        (3, ReasonCode::ServerUnavailable),
        (4, ReasonCode::BadUsernameOrPassword),
        (5, ReasonCode::NotAuthorized),
        // A success code is no refusal; unknown codes are "server unavailable".
        (0, ReasonCode::ServerUnavailable),
        (6, ReasonCode::ServerUnavailable),
        (0x87, ReasonCode::ServerUnavailable),
        (255, ReasonCode::ServerUnavailable),
    ];
    for (code, expected) in cases {
        assert_eq!(refusal_code(V311, code), expected, "{code}");
    }
    for code in 1..=5 {
        assert_eq!(v311_code(refusal_code(V311, code)), code);
    }
}

#[test]
fn refusal_codes_for_mqtt5() {
    let cases = [
        (0x87, ReasonCode::NotAuthorized),
        (0x8a, ReasonCode::Banned),
        (0x86, ReasonCode::BadUsernameOrPassword),
        (0x97, ReasonCode::QuotaExceeded),
        (0x9f, ReasonCode::ConnectionRateExceeded),
        (0x80, ReasonCode::UnspecifiedError),
        // Success codes given as refusals.
        (0x00, ReasonCode::UnspecifiedError),
        (0x01, ReasonCode::UnspecifiedError),
        (0x04, ReasonCode::UnspecifiedError),
        (0x18, ReasonCode::UnspecifiedError),
        // Unknown codes.
        (0x05, ReasonCode::UnspecifiedError),
        (0x7f, ReasonCode::UnspecifiedError),
        (0xa3, ReasonCode::UnspecifiedError),
        (0xff, ReasonCode::UnspecifiedError),
    ];
    for (code, expected) in cases {
        assert_eq!(refusal_code(V5, code), expected, "{code:#x}");
    }
    // Every CONNACK refusal stands for itself.
    for code in CONNACK_REFUSALS {
        assert_eq!(u8::from(refusal_code(V5, code)), code, "{code:#x}");
    }
}

#[test]
fn every_refusal_code_makes_a_connack_mqtt5_clients_can_read() {
    // Reason codes that exist but that a CONNACK cannot carry (DISCONNECT's "server shutting
    // down", SUBACK's "wildcard subscriptions not supported", …) must not reach one.
    let info = ConnAckInfo {
        max_packet: 1024,
        ..Default::default()
    };
    for code in 0..=u8::MAX {
        let reason = refusal_code(V5, code);
        assert_ne!(reason, ReasonCode::Success);
        let frame = connack(V5, false, reason, &info);
        let mut body = Bytes::copy_from_slice(&frame);
        let header = FixedHeader::decode(&mut body).unwrap();
        let decoded =
            Packet::decode_from_body_with_version(header.packet_type, &header, &mut body, V5);
        match decoded {
            Ok(Packet::ConnAck(packet)) => assert_eq!(packet.reason_code, reason),
            Ok(other) => panic!("{}", other.packet_type_name()),
            Err(e) => panic!("code {code:#x} → {reason:?}: {e}"),
        }
        // And 3.1.1 clients get a refusal too.
        assert_ne!(v311_code(refusal_code(V311, code)), 0);
    }
}

#[test]
fn refusals_for_http_statuses() {
    let cases = [
        (400, ReasonCode::BadUsernameOrPassword),
        (401, ReasonCode::NotAuthorized),
        (403, ReasonCode::Banned),
        (429, ReasonCode::QuotaExceeded),
        (404, ReasonCode::UnspecifiedError),
        (500, ReasonCode::UnspecifiedError),
        (200, ReasonCode::UnspecifiedError),
        (0, ReasonCode::UnspecifiedError),
    ];
    for (status, code) in cases {
        let reason = refusal_for_status(status);
        assert_eq!(reason, code, "{status}");
        assert!(CONNACK_REFUSALS.contains(&u8::from(reason)));
    }
    assert_eq!(v311_code(refusal_for_status(400)), 4);
    assert_eq!(v311_code(refusal_for_status(401)), 5);
    assert_eq!(v311_code(refusal_for_status(403)), 5);
    assert_eq!(v311_code(refusal_for_status(429)), 3);
}

#[test]
fn check_connect_refusals_are_connack_codes() {
    let mut keep_alive_0 = v4_connect("abc");
    keep_alive_0.keep_alive = 0;
    let refusals = [
        check_connect(&v4_connect("a-b"), no_new_id),
        check_connect(&keep_alive_0, no_new_id),
        check_connect(
            &with_will(v5_connect("a"), WillMessage::new("", vec![])),
            no_new_id,
        ),
        check_connect(
            &with_will(v5_connect("a"), WillMessage::new("t", vec![0; 5000])),
            no_new_id,
        ),
        check_connect(
            &with_will(
                v5_connect("a"),
                WillMessage::new("t", vec![]).with_retain(true),
            ),
            no_new_id,
        ),
        check_connect(
            &ConnectPacket::new(ConnectOptions::new("a").with_authentication_method("x")),
            no_new_id,
        ),
    ];
    for refusal in refusals {
        let code = refused(refusal);
        assert!(CONNACK_REFUSALS.contains(&u8::from(code)), "{code:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// PUBLISH.
// ---------------------------------------------------------------------------------------------

#[test]
fn publish_3_1_1_qos0_has_no_properties() {
    let payload = Bytes::from_static(b"hello");
    let users = pairs(&[("k", "v")]);
    let correlation = Bytes::from_static(b"corr");
    let message = Outbound {
        expiry_secs: Some(10),
        correlation_data: Some(&correlation),
        ..outbound("a/b", QoS::AtMostOnce, &payload, DataType::Json, &users)
    };
    let frame = publish(V311, &message);
    assert_eq!(
        &frame[..],
        [0x30, 0x0a, 0x00, 0x03, b'a', b'/', b'b', b'h', b'e', b'l', b'l', b'o']
    );
    assert_eq!(packet_id_of(&frame), None);
    assert_eq!(with_packet_id(&frame, 0x1234), frame);
    assert_eq!(as_duplicate(&frame), frame);
    let packet = as_publish(decode_frame(&frame, V311));
    assert_eq!(packet.packet_id, None);
    assert!(!packet.dup);
}

#[test]
fn publish_3_1_1_qos1_takes_its_packet_id() {
    let payload = Bytes::from_static(b"hello");
    let frame = publish(
        V311,
        &outbound("a/b", QoS::AtLeastOnce, &payload, DataType::Binary, &[]),
    );
    assert_eq!(
        &frame[..],
        [0x32, 0x0c, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x00, b'h', b'e', b'l', b'l', b'o']
    );
    assert_eq!(packet_id_of(&frame), Some(0));
    let with_id = with_packet_id(&frame, 0x1234);
    assert_eq!(&with_id[7..9], [0x12, 0x34]);
    assert_eq!(with_id.len(), frame.len());
    assert_eq!(packet_id_of(&with_id), Some(0x1234));
    let packet = as_publish(decode_frame(&with_id, V311));
    assert_eq!(packet.packet_id, Some(0x1234));
    assert_eq!(packet.topic_name, "a/b");
    assert_eq!(&packet.payload[..], b"hello");
    assert_eq!(packet.qos, QoS::AtLeastOnce);
    assert!(!packet.dup && !packet.retain);
    // The original frame is left as it was.
    assert_eq!(packet_id_of(&frame), Some(0));
}

#[test]
fn publish_mqtt5_carries_its_properties() {
    let payload = Bytes::from_static(br#"{"hello":"world"}"#);
    let users = pairs(&[("a", "1"), ("b", "2"), ("a", "3")]);
    let correlation = Bytes::from_static(b"\x00\x01corr");
    let message = Outbound {
        expiry_secs: Some(30),
        correlation_data: Some(&correlation),
        ..outbound("room/1", QoS::AtLeastOnce, &payload, DataType::Json, &users)
    };
    let frame = with_packet_id(&publish(V5, &message), 77);
    let packet = as_publish(decode_frame(&frame, V5));
    assert_eq!(packet.topic_name, "room/1");
    assert_eq!(packet.packet_id, Some(77));
    assert_eq!(packet.payload, payload);
    assert_eq!(packet.qos, QoS::AtLeastOnce);
    let p = &packet.properties;
    assert_eq!(
        string_property(p, PropertyId::ContentType),
        Some("application/json")
    );
    assert_eq!(
        data_type_of(string_property(p, PropertyId::ContentType)),
        DataType::Json
    );
    assert_eq!(
        p.get(PropertyId::PayloadFormatIndicator),
        Some(&PropertyValue::Byte(1))
    );
    assert_eq!(int_property(p, PropertyId::MessageExpiryInterval), Some(30));
    assert_eq!(
        p.get(PropertyId::CorrelationData),
        Some(&PropertyValue::BinaryData(correlation.clone()))
    );
    assert_eq!(user_properties(p), users);
    // The Framer reads it the same.
    let packets = Framer::new(4096).push(&frame, V5).unwrap();
    assert_eq!(describe_all(&packets), [describe(&Packet::Publish(packet))]);
}

#[test]
fn publish_mqtt5_content_types_by_data_type() {
    let payload = Bytes::from_static(b"x");
    for data_type in ALL_DATA_TYPES {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            let frame = publish(V5, &outbound("t", qos, &payload, data_type, &[]));
            let packet = as_publish(decode_frame(&frame, V5));
            let p = &packet.properties;
            assert_eq!(
                string_property(p, PropertyId::ContentType),
                Some(content_type_of(data_type))
            );
            assert_eq!(
                data_type_of(string_property(p, PropertyId::ContentType)),
                data_type
            );
            let utf8 = matches!(data_type, DataType::Text | DataType::Json);
            assert_eq!(
                p.get(PropertyId::PayloadFormatIndicator),
                utf8.then_some(&PropertyValue::Byte(1)),
                "{data_type:?}"
            );
            assert!(!p.contains(PropertyId::MessageExpiryInterval));
            assert!(!p.contains(PropertyId::CorrelationData));
            assert!(!p.contains(PropertyId::UserProperty));
            assert_eq!(packet.qos, qos);
            assert_eq!(packet.packet_id, (qos == QoS::AtLeastOnce).then_some(0));
            assert_eq!(packet_id_of(&frame), packet.packet_id);
        }
    }
}

#[test]
fn with_packet_id_finds_the_slot_behind_long_lengths() {
    // 2- and 3-byte remaining lengths, long topics.
    for (topic_len, payload_len) in [(1, 0), (200, 10), (10, 200), (3000, 20_000), (0, 5)] {
        let topic = "t".repeat(topic_len);
        let payload = Bytes::from(vec![0xa5; payload_len]);
        for version in [V311, V5] {
            let frame = publish(
                version,
                &outbound(&topic, QoS::AtLeastOnce, &payload, DataType::Binary, &[]),
            );
            let with_id = with_packet_id(&frame, 0xbeef);
            assert_eq!(packet_id_of(&with_id), Some(0xbeef));
            let packet = as_publish(decode_frame(&with_id, version));
            assert_eq!(packet.packet_id, Some(0xbeef));
            assert_eq!(packet.topic_name, topic);
            assert_eq!(packet.payload, payload);
        }
    }
}

#[test]
fn packet_ids_of_other_frames() {
    assert_eq!(packet_id_of(&[]), None);
    assert_eq!(
        packet_id_of(&puback(V311, 5, ReasonCode::Success, None)),
        None
    );
    assert_eq!(packet_id_of(&pingresp()), None);
    // A QoS 1 PUBLISH cut before its packet id.
    assert_eq!(packet_id_of(&PUBLISH_V311[..8]), None);
    assert_eq!(with_packet_id(&PUBLISH_V311[..8], 9), PUBLISH_V311[..8]);
    assert_eq!(as_duplicate(&PUBLISH_V311[..8]), PUBLISH_V311[..8]);
    assert_eq!(packet_id_of(&PUBLISH_V311[..1]), None);
    // A frame whose remaining length never ends.
    assert_eq!(packet_id_of(&[0x32, 0x80, 0x80, 0x80, 0x80, 0x00]), None);
    // A client's QoS 1 PUBLISH, read where the service's are.
    assert_eq!(packet_id_of(PUBLISH_V311), Some(7));
    // PUBACK and SUBACK are left alone.
    let suback_frame = suback(V311, 3, &[SubAckCode::GrantedQoS1]);
    assert_eq!(with_packet_id(&suback_frame, 9), suback_frame);
}

#[test]
fn as_duplicate_marks_qos1_only() {
    let payload = Bytes::from_static(b"data");
    for version in [V311, V5] {
        let qos1 = with_packet_id(
            &publish(
                version,
                &outbound("t/1", QoS::AtLeastOnce, &payload, DataType::Text, &[]),
            ),
            42,
        );
        let dup = as_duplicate(&qos1);
        assert_eq!(dup[0], qos1[0] | 0x08);
        assert_eq!(dup[1..], qos1[1..]);
        let packet = as_publish(decode_frame(&dup, version));
        assert!(packet.dup);
        assert_eq!(packet.packet_id, Some(42));
        assert_eq!(packet.qos, QoS::AtLeastOnce);
        assert_eq!(packet.topic_name, "t/1");
        assert_eq!(as_duplicate(&dup), dup);
        // The packet id can still be put in after marking.
        let renumbered = with_packet_id(&dup, 43);
        let packet = as_publish(decode_frame(&renumbered, version));
        assert!(packet.dup);
        assert_eq!(packet.packet_id, Some(43));

        let qos0 = publish(
            version,
            &outbound("t/0", QoS::AtMostOnce, &payload, DataType::Text, &[]),
        );
        assert_eq!(as_duplicate(&qos0), qos0);
        assert!(!as_publish(decode_frame(&as_duplicate(&qos0), version)).dup);
    }
}

// ---------------------------------------------------------------------------------------------
// Acknowledgements, PINGRESP, DISCONNECT.
// ---------------------------------------------------------------------------------------------

#[test]
fn puback_3_1_1_is_exactly_four_bytes() {
    assert_eq!(
        &puback(V311, 0x1234, ReasonCode::Success, None)[..],
        [0x40, 0x02, 0x12, 0x34]
    );
    // 3.1.1 has no reason codes: refusals are acknowledged the same.
    assert_eq!(
        &puback(V311, 0xfffe, ReasonCode::NotAuthorized, Some("no"))[..],
        [0x40, 0x02, 0xff, 0xfe]
    );
    let Packet::PubAck(ack) = decode_frame(&puback(V311, 9, ReasonCode::Success, None), V311)
    else {
        panic!()
    };
    assert_eq!(ack.packet_id, 9);
}

#[test]
fn puback_mqtt5() {
    assert_eq!(
        &puback(V5, 0x0102, ReasonCode::Success, None)[..],
        [0x40, 0x02, 0x01, 0x02]
    );
    for (code, reason) in [
        (ReasonCode::NotAuthorized, Some("not allowed")),
        (ReasonCode::NoMatchingSubscribers, None),
        (ReasonCode::Success, Some("fine")),
    ] {
        let Packet::PubAck(ack) = decode_frame(&puback(V5, 500, code, reason), V5) else {
            panic!()
        };
        assert_eq!(ack.packet_id, 500);
        assert_eq!(ack.reason_code, code);
        assert_eq!(
            string_property(&ack.properties, PropertyId::ReasonString),
            reason
        );
    }
}

#[test]
fn suback_3_1_1_maps_refusals_to_0x80() {
    let codes = [
        SubAckCode::GrantedQoS0,
        SubAckCode::GrantedQoS1,
        SubAckCode::WildcardSubscriptionsNotSupported,
        SubAckCode::SharedSubscriptionsNotSupported,
        SubAckCode::NotAuthorized,
        SubAckCode::TopicFilterInvalid,
    ];
    let frame = suback(V311, 0x0107, &codes);
    assert_eq!(
        &frame[..],
        [0x90, 0x08, 0x01, 0x07, 0x00, 0x01, 0x80, 0x80, 0x80, 0x80]
    );
    let Packet::SubAck(packet) = decode_frame(&frame, V311) else {
        panic!()
    };
    assert_eq!(packet.packet_id, 0x0107);
    assert_eq!(packet.reason_codes.len(), codes.len());
    assert_eq!(packet.reason_codes[1], SubAckCode::GrantedQoS1);
    assert!(packet.reason_codes[2..].iter().all(|c| !c.is_success()));
}

#[test]
fn suback_mqtt5_keeps_its_reason_codes() {
    let codes = [
        SubAckCode::GrantedQoS1,
        SubAckCode::WildcardSubscriptionsNotSupported,
        SubAckCode::SharedSubscriptionsNotSupported,
        SubAckCode::TopicFilterInvalid,
        SubAckCode::NotAuthorized,
        SubAckCode::GrantedQoS0,
    ];
    let frame = suback(V5, 9, &codes);
    let Packet::SubAck(packet) = decode_frame(&frame, V5) else {
        panic!()
    };
    assert_eq!(packet.packet_id, 9);
    assert_eq!(packet.reason_codes, codes);
    assert_eq!(
        &frame[frame.len() - codes.len()..],
        [0x01, 0xa2, 0x9e, 0x8f, 0x87, 0x00]
    );
}

#[test]
fn unsuback_both_versions() {
    assert_eq!(
        &unsuback(
            V311,
            0xabcd,
            &[UnsubAckCode::Success, UnsubAckCode::NotAuthorized]
        )[..],
        [0xb0, 0x02, 0xab, 0xcd]
    );
    let Packet::UnsubAck(packet) = decode_frame(&unsuback(V311, 3, &[UnsubAckCode::Success]), V311)
    else {
        panic!()
    };
    assert_eq!(packet.packet_id, 3);

    let codes = [
        UnsubAckCode::Success,
        UnsubAckCode::NoSubscriptionExisted,
        UnsubAckCode::TopicFilterInvalid,
    ];
    let Packet::UnsubAck(packet) = decode_frame(&unsuback(V5, 0xabcd, &codes), V5) else {
        panic!()
    };
    assert_eq!(packet.packet_id, 0xabcd);
    assert_eq!(packet.reason_codes, codes);
}

#[test]
fn pingresp_is_two_bytes() {
    assert_eq!(&pingresp()[..], [0xd0, 0x00]);
    assert!(matches!(decode_frame(&pingresp(), V311), Packet::PingResp));
}

#[test]
fn disconnect_mqtt5() {
    assert_eq!(&disconnect(ReasonCode::Success, None)[..], [0xe0, 0x00]);
    assert_eq!(
        &disconnect(ReasonCode::NotAuthorized, None)[..],
        [0xe0, 0x01, 0x87]
    );
    for (code, reason) in [
        (ReasonCode::ServerShuttingDown, Some("maintenance")),
        (ReasonCode::KeepAliveTimeout, None),
        (
            ReasonCode::SessionTakenOver,
            Some("another connection took it"),
        ),
        (ReasonCode::Success, Some("bye")),
    ] {
        let Packet::Disconnect(packet) = decode_frame(&disconnect(code, reason), V5) else {
            panic!()
        };
        assert_eq!(packet.reason_code, code);
        assert_eq!(
            string_property(&packet.properties, PropertyId::ReasonString),
            reason
        );
    }
}

#[test]
fn constants() {
    assert_eq!((V311, V5), (4, 5));
    assert_eq!(SUBPROTOCOLS, ["mqtt", "mqttv3.1"]);
    assert_eq!(SERVER_MESSAGES_TOPIC, "$webpubsub/server/messages");
    assert_eq!((MAX_WILL_TOPIC, MAX_WILL_PAYLOAD), (1024, 2000));
}

// ---------------------------------------------------------------------------------------------
// Property tests.
// ---------------------------------------------------------------------------------------------

fn qos_strategy() -> impl Strategy<Value = QoS> {
    prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)]
}

fn data_type_strategy() -> impl Strategy<Value = DataType> {
    prop::sample::select(ALL_DATA_TYPES.to_vec())
}

fn version_strategy() -> impl Strategy<Value = u8> {
    prop_oneof![Just(V311), Just(V5)]
}

/// Payloads mostly small, sometimes large enough for a 3-byte remaining length.
fn payload_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..300),
        1 => prop::collection::vec(any::<u8>(), 16_000..20_000),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn framer_never_panics_nor_holds_more_than_a_packet(
        data in prop::collection::vec(any::<u8>(), 0..2000),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
        max_packet in prop_oneof![0usize..16, 16usize..2000, Just(usize::MAX)],
        version in version_strategy(),
    ) {
        let cuts: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
        let mut framer = Framer::new(max_packet);
        for chunk in split_at(&data, &cuts) {
            match framer.push(chunk, version) {
                Ok(_) => {
                    prop_assert!(framer.buffered() <= max_packet.saturating_add(5));
                    // Tighter: a partial fixed header or a partial packet of at most max_packet.
                    prop_assert!(framer.buffered() <= max_packet.max(4));
                }
                // The connection ends at the first error.
                Err(_) => break,
            }
        }
    }

    #[test]
    fn framer_results_do_not_depend_on_chunking(
        data in prop::collection::vec(any::<u8>(), 0..600),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
        max_packet in 0usize..700,
        version in version_strategy(),
    ) {
        let cuts: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
        let mut whole = Framer::new(max_packet);
        let whole_result = whole.push(&data, version);
        let mut chunked = Framer::new(max_packet);
        let mut packets = Vec::new();
        let mut error = None;
        for chunk in split_at(&data, &cuts) {
            match chunked.push(chunk, version) {
                Ok(got) => packets.extend(got),
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        match whole_result {
            Ok(all) => {
                prop_assert_eq!(error, None);
                prop_assert_eq!(describe_all(&packets), describe_all(&all));
                prop_assert_eq!(chunked.buffered(), whole.buffered());
            }
            Err(e) => prop_assert_eq!(error, Some(e)),
        }
    }

    #[test]
    fn framer_reads_publish_streams_however_they_are_cut(
        messages in prop::collection::vec(
            ("[a-z0-9/]{1,20}", prop::collection::vec(any::<u8>(), 0..200), qos_strategy(), any::<u16>()),
            1..8,
        ),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..16),
        version in version_strategy(),
    ) {
        let mut stream = Vec::new();
        for (topic, payload, qos, id) in &messages {
            let payload = Bytes::from(payload.clone());
            let frame = publish(version, &outbound(topic, *qos, &payload, DataType::Binary, &[]));
            stream.extend_from_slice(&with_packet_id(&frame, *id));
        }
        let cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        let mut framer = Framer::new(1024);
        let packets = push_chunks(&mut framer, split_at(&stream, &cuts), version).unwrap();
        prop_assert_eq!(framer.buffered(), 0);
        prop_assert_eq!(packets.len(), messages.len());
        for (packet, (topic, payload, qos, id)) in packets.into_iter().zip(&messages) {
            let packet = as_publish(packet);
            prop_assert_eq!(&packet.topic_name, topic);
            prop_assert_eq!(&packet.payload[..], &payload[..]);
            prop_assert_eq!(packet.qos, *qos);
            prop_assert_eq!(packet.packet_id, (*qos == QoS::AtLeastOnce).then_some(*id));
        }
    }

    #[test]
    fn publish_with_packet_id_round_trips(
        topic in "\\PC{0,80}",
        payload in payload_strategy(),
        qos in qos_strategy(),
        id in any::<u16>(),
        version in version_strategy(),
        data_type in data_type_strategy(),
        expiry in proptest::option::of(any::<u32>()),
        users in prop::collection::vec(("\\PC{0,10}", "\\PC{0,10}"), 0..4),
    ) {
        let payload = Bytes::from(payload);
        let message = Outbound {
            expiry_secs: expiry,
            ..outbound(&topic, qos, &payload, data_type, &users)
        };
        let frame = with_packet_id(&publish(version, &message), id);
        let qos1 = qos == QoS::AtLeastOnce;
        prop_assert_eq!(packet_id_of(&frame), qos1.then_some(id));

        let packet = as_publish(decode_frame(&frame, version));
        prop_assert_eq!(&packet.topic_name, &topic);
        prop_assert_eq!(&packet.payload, &payload);
        prop_assert_eq!(packet.qos, qos);
        prop_assert_eq!(packet.packet_id, qos1.then_some(id));
        prop_assert!(!packet.dup && !packet.retain);
        if version == V5 {
            let p = &packet.properties;
            prop_assert_eq!(data_type_of(string_property(p, PropertyId::ContentType)), data_type);
            prop_assert_eq!(int_property(p, PropertyId::MessageExpiryInterval), expiry);
            prop_assert_eq!(user_properties(p), users);
        } else {
            prop_assert!(packet.properties.is_empty());
        }

        // Marked as a duplicate: DUP on QoS 1 only, nothing else changed.
        let dup = as_duplicate(&frame);
        let again = as_publish(decode_frame(&dup, version));
        prop_assert_eq!(again.dup, qos1);
        prop_assert_eq!(again.packet_id, packet.packet_id);
        prop_assert_eq!(&again.topic_name, &topic);
        prop_assert_eq!(&again.payload, &payload);

        // The Framer reads the same packet, in one push.
        let packets = Framer::new(frame.len()).push(&frame, version).unwrap();
        prop_assert_eq!(describe_all(&packets), vec![describe(&Packet::Publish(packet))]);
    }

    #[test]
    fn check_connect_never_accepts_a_bad_client_id(id in "\\PC{0,200}", v5 in any::<bool>()) {
        let connect = if v5 { v5_connect(&id) } else { v4_connect(&id) };
        let result = check_connect(&connect, || "assigned".to_string());
        let valid = !id.is_empty()
            && id.len() <= MAX_CLIENT_ID
            && id.chars().all(|c| c.is_ascii_alphanumeric());
        match result {
            Ok(accepted) if id.is_empty() => {
                prop_assert_eq!(accepted.client_id, "assigned");
                prop_assert!(accepted.assigned);
            }
            Ok(accepted) => {
                prop_assert!(valid, "{:?} accepted", id);
                prop_assert_eq!(accepted.client_id, id);
                prop_assert!(!accepted.assigned);
            }
            Err(refusal) => {
                prop_assert!(!valid);
                prop_assert_eq!(refusal.code, ReasonCode::ClientIdentifierNotValid);
            }
        }
    }

    #[test]
    fn data_type_of_ignores_case_and_parameters(
        data_type in data_type_strategy(),
        upper in prop::collection::vec(any::<bool>(), 0..32),
        params in "(; ?[a-z]{1,8}=[a-zA-Z0-9-]{1,8}){0,3}",
        spaces in " {0,3}",
    ) {
        let content_type: String = content_type_of(data_type)
            .chars()
            .enumerate()
            .map(|(i, c)| if upper.get(i).copied().unwrap_or(false) { c.to_ascii_uppercase() } else { c })
            .collect();
        let full = format!("{spaces}{content_type}{spaces}{params}");
        prop_assert_eq!(data_type_of(Some(&full)), data_type);
    }
}
