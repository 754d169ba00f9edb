//! Property tests of every parser of the wire contract: connection strings, tokens, audiences,
//! client frames (JSON and protobuf) and group patterns. Whatever the input, no panic and an answer; where a
//! round trip exists, it holds; the group-pattern matcher agrees with a plain reference matcher.
//! `PROPTEST_CASES` raises the number of cases (`scripts/fuzz` runs millions).

use hubbub_proto::audience::{check, PublicEndpoint};
use hubbub_proto::client_protocol::{parse_client_message, ClientMessage, DataType};
use hubbub_proto::connection_string::ConnectionString;
use hubbub_proto::jwt;
use hubbub_proto::protobuf;
use hubbub_proto::roles::GroupPattern;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// Text that reaches the parsers: any characters, with the separators and escapes they care
/// about over-represented.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        proptest::collection::vec(
            prop_oneof![
                Just(";".to_string()),
                Just("=".to_string()),
                Just(".".to_string()),
                Just("/".to_string()),
                Just("%".to_string()),
                Just(":".to_string()),
                Just("Endpoint".to_string()),
                Just("AccessKey".to_string()),
                Just("Port".to_string()),
                Just("http://".to_string()),
                "[a-zA-Z0-9]{0,6}",
            ],
            0..12,
        )
        .prop_map(|parts| parts.concat()),
    ]
}

proptest! {
    #[test]
    fn connection_strings_never_panic(input in text()) {
        let _ = ConnectionString::parse(&input);
    }

    #[test]
    fn rendered_connection_strings_parse_back(
        host in "[a-z][a-z0-9]{0,10}(\\.[a-z]{2,5}){0,2}",
        port in proptest::option::of(1u16..),
        https in any::<bool>(),
        key in "[A-Za-z0-9+/=]{1,64}",
    ) {
        let scheme = if https { "https" } else { "http" };
        let endpoint = match port {
            Some(port) => format!("{scheme}://{host}:{port}"),
            None => format!("{scheme}://{host}"),
        };
        let parsed = ConnectionString::parse(&ConnectionString::render(&endpoint, &key)).unwrap();
        // The same URL: a scheme's default port (`http://a:80`) may be dropped on the way.
        let same = |a: &str| url::Url::parse(a).map(|u| u.to_string()).unwrap_or_default();
        prop_assert_eq!(same(&parsed.endpoint), same(&endpoint));
        prop_assert_eq!(parsed.access_key, key);
    }

    #[test]
    fn tokens_never_panic(input in text(), dots in proptest::collection::vec(any::<String>(), 0..5)) {
        let _ = jwt::decode(&input);
        let _ = jwt::decode(&dots.join("."));
        if let Ok(token) = jwt::decode(&input) {
            let _ = token.verify_signature(&[b"k"]);
            let _ = token.claims.validate_time(0, 300);
            let _ = token.claims.audiences();
        }
    }

    #[test]
    fn signed_tokens_verify_with_their_key_only(
        claims in proptest::collection::btree_map("[a-z]{1,8}", "[ -~]{0,16}", 0..6),
        key in proptest::collection::vec(any::<u8>(), 1..64),
        other in proptest::collection::vec(any::<u8>(), 1..64),
    ) {
        let map: Map<String, Value> = claims
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        let token = jwt::sign(&map, &key, None);
        let decoded = jwt::decode(&token).unwrap();
        prop_assert_eq!(&decoded.claims.0, &map);
        prop_assert_eq!(decoded.verify_signature(&[&key]).ok(), Some(0));
        if other != key {
            prop_assert!(decoded.verify_signature(&[&other]).is_err());
        }
    }

    #[test]
    fn audiences_never_panic(aud in text(), path in text(), endpoint in text()) {
        let endpoints: Vec<PublicEndpoint> = PublicEndpoint::parse(&endpoint).into_iter().collect();
        let fixed = PublicEndpoint::parse("http://localhost:8080").unwrap();
        let _ = check(&[aud.as_str()], &endpoints, &path);
        let _ = check(&[aud.as_str()], std::slice::from_ref(&fixed), &path);
    }

    #[test]
    fn an_audience_naming_the_endpoint_and_path_is_accepted(
        segments in proptest::collection::vec("[a-zA-Z0-9_-]{1,8}", 1..5),
        upper in any::<bool>(),
    ) {
        let endpoint = PublicEndpoint::parse("https://Example.com:8443").unwrap();
        let path = format!("/{}", segments.join("/"));
        let host = if upper { "EXAMPLE.COM" } else { "example.com" };
        let aud = format!("http://{host}:8443{path}?api-version=1");
        prop_assert!(check(&[aud.as_str()], &[endpoint], &path).is_ok());
    }

    #[test]
    fn client_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256), input in text()) {
        let _ = parse_client_message(&bytes);
        let _ = parse_client_message(input.as_bytes());
    }

    #[test]
    fn protobuf_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = protobuf::parse_client_message(&bytes);
    }

    #[test]
    fn protobuf_send_to_group_round_trips(
        group in "[a-z0-9.]{1,40}",
        ack_id in proptest::option::of(any::<u64>()),
        no_echo in any::<bool>(),
        data in any::<String>(),
        ttl in 0u32..=300,
        metadata in proptest::collection::btree_map("[a-z0-9-]{1,20}", "[ -~]{0,40}", 0..5),
        flip in any::<prop::sample::Index>(),
    ) {
        let frame = send_to_group_frame(&group, ack_id, no_echo, &data, ttl, &metadata);
        match protobuf::parse_client_message(&frame).unwrap() {
            ClientMessage::SendToGroup { group: g, ack_id: a, no_echo: n, data: d, metadata: m, ttl_seconds: t } => {
                prop_assert_eq!((g, a, n), (group, ack_id, no_echo));
                prop_assert_eq!(d.data_type, DataType::Text);
                prop_assert_eq!(d.bytes, data.into_bytes());
                prop_assert_eq!(t, (ttl > 0).then_some(ttl));
                prop_assert_eq!(m, metadata.into_iter().collect::<Vec<_>>());
            }
            other => prop_assert!(false, "{:?}", other),
        }
        // A damaged frame is an answer, never a panic.
        let mut damaged = frame.clone();
        let at = flip.index(damaged.len());
        damaged[at] ^= 0x55;
        let _ = protobuf::parse_client_message(&damaged);
        let _ = protobuf::parse_client_message(&frame[..at]);
    }

    #[test]
    fn a_protobuf_sequence_id_patch_is_the_frame_made_with_it(
        group in proptest::option::of("[a-z]{1,10}"),
        data in proptest::collection::vec(any::<u8>(), 0..300),
        sequence_id in any::<u64>(),
    ) {
        // Byte for byte without metadata (field 4 then comes last either way); with metadata the
        // fields' order differs, which the codec's own tests check by decoding.
        let metadata: Vec<(String, String)> = Vec::new();
        let from = group.as_deref().map(|g| (g, None));
        let shared = protobuf::data_message_without_sequence(from, DataType::Binary, &data, &metadata, None);
        prop_assert_eq!(
            protobuf::append_sequence_id(&shared, sequence_id),
            protobuf::data_message(from, DataType::Binary, &data, &metadata, None, Some(sequence_id))
        );
    }

    #[test]
    fn json_values_as_frames_never_panic(value in json_value()) {
        let _ = parse_client_message(value.to_string().as_bytes());
        let mut object = json!({"type": "sendToGroup", "group": "g", "ackId": 1});
        object["data"] = value.clone();
        object["dataType"] = json!("binary");
        let _ = parse_client_message(object.to_string().as_bytes());
    }

    #[test]
    fn client_frames_round_trip(
        group in "[ -~]{1,40}",
        ack_id in proptest::option::of(any::<u64>()),
        no_echo in any::<bool>(),
        data in any::<String>(),
        sequence_id in any::<u64>(),
    ) {
        let join = json!({"type": "joinGroup", "group": group, "ackId": ack_id});
        prop_assert_eq!(
            parse_client_message(join.to_string().as_bytes()).unwrap(),
            ClientMessage::JoinGroup { group: group.clone(), ack_id }
        );
        let send = json!({"type": "sendToGroup", "group": group, "ackId": ack_id, "noEcho": no_echo, "dataType": "text", "data": data});
        match parse_client_message(send.to_string().as_bytes()).unwrap() {
            ClientMessage::SendToGroup { group: g, ack_id: a, no_echo: n, data: d, .. } => {
                prop_assert_eq!((g, a, n), (group.clone(), ack_id, no_echo));
                prop_assert_eq!(d.data_type, DataType::Text);
                prop_assert_eq!(d.bytes, data.as_bytes().to_vec());
            }
            other => prop_assert!(false, "{:?}", other),
        }
        let ack = json!({"type": "sequenceAck", "sequenceId": sequence_id});
        prop_assert_eq!(
            parse_client_message(ack.to_string().as_bytes()).unwrap(),
            ClientMessage::SequenceAck { sequence_id }
        );
    }

    #[test]
    fn group_patterns_never_panic(pattern in text(), group in text()) {
        if let Some(p) = GroupPattern::parse(&pattern) {
            let _ = p.matches(&group);
        }
    }

    #[test]
    fn group_patterns_agree_with_a_reference_matcher(
        pattern in "[ab.*?\\\\]{1,10}",
        group in "[ab.]{0,12}",
    ) {
        let expected = reference_tokens(&pattern).map(|tokens| reference_match(&tokens, &group.chars().collect::<Vec<_>>()));
        let got = GroupPattern::parse(&pattern).map(|p| p.matches(&group));
        prop_assert_eq!(got, expected, "pattern {:?} group {:?}", pattern, group);
    }
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("type".to_string()),
                    Just("data".to_string()),
                    Just("ackId".to_string()),
                    Just("group".to_string()),
                    any::<String>()
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone, Copy)]
enum Token {
    Literal(char),
    One,
    InSegment,
    Across,
}

/// The pattern language, read plainly: `\` escapes `\`, `*` or `?`; `**` any characters; `*`
/// any characters but `.`; `?` one character but `.`; at most five `*`.
fn reference_tokens(pattern: &str) -> Option<Vec<Token>> {
    if pattern.chars().filter(|&c| c == '*').count() > 5 {
        return None;
    }
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => match chars.get(i + 1) {
                Some(&c @ ('\\' | '*' | '?')) => {
                    tokens.push(Token::Literal(c));
                    i += 1;
                }
                _ => return None,
            },
            '*' if chars.get(i + 1) == Some(&'*') => {
                tokens.push(Token::Across);
                i += 1;
            }
            '*' => tokens.push(Token::InSegment),
            '?' => tokens.push(Token::One),
            c => tokens.push(Token::Literal(c)),
        }
        i += 1;
    }
    Some(tokens)
}

/// Tries every way (exponential, fine for these short inputs).
fn reference_match(tokens: &[Token], text: &[char]) -> bool {
    match tokens.split_first() {
        None => text.is_empty(),
        Some((Token::Literal(c), rest)) => {
            text.first() == Some(c) && reference_match(rest, &text[1..])
        }
        Some((Token::One, rest)) => {
            text.first().is_some_and(|&c| c != '.') && reference_match(rest, &text[1..])
        }
        Some((Token::InSegment, rest)) => {
            let limit = text.iter().position(|&c| c == '.').unwrap_or(text.len());
            (0..=limit).any(|skip| reference_match(rest, &text[skip..]))
        }
        Some((Token::Across, rest)) => {
            (0..=text.len()).any(|skip| reference_match(rest, &text[skip..]))
        }
    }
}

/// Protobuf wire encoding by hand, independent of the generated code: a varint, a tag, a
/// length-delimited field.
fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn field(out: &mut Vec<u8>, number: u64, bytes: &[u8]) {
    varint(out, number << 3 | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn number(out: &mut Vec<u8>, field: u64, n: u64) {
    varint(out, field << 3);
    varint(out, n);
}

/// `UpstreamMessage { send_to_group_message: { group, ack_id, data: { text_data }, no_echo,
/// ttl_seconds, metadata } }`.
fn send_to_group_frame(
    group: &str,
    ack_id: Option<u64>,
    no_echo: bool,
    data: &str,
    ttl: u32,
    metadata: &std::collections::BTreeMap<String, String>,
) -> Vec<u8> {
    let mut inner = Vec::new();
    field(&mut inner, 1, group.as_bytes());
    if let Some(ack_id) = ack_id {
        number(&mut inner, 2, ack_id);
    }
    let mut message_data = Vec::new();
    field(&mut message_data, 1, data.as_bytes());
    field(&mut inner, 3, &message_data);
    number(&mut inner, 4, u64::from(no_echo));
    number(&mut inner, 5, u64::from(ttl));
    for (key, value) in metadata {
        let mut entry = Vec::new();
        field(&mut entry, 1, key.as_bytes());
        field(&mut entry, 2, value.as_bytes());
        field(&mut inner, 6, &entry);
    }
    let mut frame = Vec::new();
    field(&mut frame, 1, &inner);
    frame
}
