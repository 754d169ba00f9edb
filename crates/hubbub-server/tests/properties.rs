//! Property tests of the service's own parsers: the OData filter (parse, type-check, evaluate)
//! and the frames of every client subprotocol. Whatever the input: no panic, an answer, and a
//! filter that parses evaluates on any connection. `PROPTEST_CASES` raises the number of cases
//! (`scripts/fuzz` runs millions).

use bytes::Bytes;
use hubbub_server::dataplane::filter::{Filter, FilterSubject};
use hubbub_server::protocols::{Inbound, Protocol};
use proptest::prelude::*;

#[derive(Debug)]
struct Subject {
    id: String,
    user: Option<String>,
    groups: Vec<String>,
}

impl FilterSubject for Subject {
    fn connection_id(&self) -> &str {
        &self.id
    }
    fn user_id(&self) -> Option<&str> {
        self.user.as_deref()
    }
    fn has_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
    fn group_count(&self) -> usize {
        self.groups.len()
    }
}

fn subject() -> impl Strategy<Value = Subject> {
    (
        "[a-z0-9]{1,8}",
        proptest::option::of("[a-zA-Z' ]{0,8}"),
        proptest::collection::vec("[a-z]{1,4}", 0..4),
    )
        .prop_map(|(id, user, groups)| Subject { id, user, groups })
}

/// Filter text: the language's words, literals and punctuation in any order, and plain noise.
fn filter_text() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        Just("userId"),
        Just("connectionId"),
        Just("groups"),
        Just("eq"),
        Just("ne"),
        Just("gt"),
        Just("ge"),
        Just("lt"),
        Just("le"),
        Just("and"),
        Just("or"),
        Just("not"),
        Just("in"),
        Just("null"),
        Just("true"),
        Just("false"),
        Just("("),
        Just(")"),
        Just(","),
        Just("'a'"),
        Just("'it''s'"),
        Just("'"),
        Just("42"),
        Just("-1"),
        Just("99999999999999999999"),
        Just("length(userId)"),
        Just("substring(userId, 1, 2)"),
        Just("indexof(connectionId, 'a')"),
        Just("tolower("),
        Just("concat('a', userId)"),
        Just("startswith(userId, 'u')"),
        Just("'g' in groups"),
    ];
    prop_oneof![
        proptest::collection::vec(word, 0..16).prop_map(|w| w.join(" ")),
        any::<String>(),
    ]
}

proptest! {
    #[test]
    fn filters_never_panic_and_parsed_ones_evaluate(text in filter_text(), subjects in proptest::collection::vec(subject(), 1..4)) {
        if let Ok(filter) = Filter::parse(&text) {
            for subject in &subjects {
                let _ = filter.matches(subject);
            }
        }
    }

    #[test]
    fn deep_and_long_filters_are_refused_or_evaluated(depth in 0usize..64, width in 0usize..160) {
        let nested = format!("{}userId eq 'a'{}", "(".repeat(depth), ")".repeat(depth));
        let _ = Filter::parse(&nested);
        let chain = vec!["userId eq 'a'"; width.max(1)].join(" or ");
        if let Ok(filter) = Filter::parse(&chain) {
            let one = Subject { id: "c".into(), user: Some("a".into()), groups: vec![] };
            prop_assert!(filter.matches(&one));
        }
    }

    #[test]
    fn frames_of_every_subprotocol_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        binary in any::<bool>(),
    ) {
        let protocols = [
            Protocol::json(),
            Protocol::json_reliable(),
            Protocol::simple(None),
            Protocol::simple(Some("g".into())),
        ];
        for protocol in &protocols {
            let inbound = protocol.decode(Bytes::from(bytes.clone()), binary);
            if protocol.name().is_none() {
                let raw_frame = matches!(inbound, Inbound::Event { .. } | Inbound::ToGroup { .. });
                prop_assert!(raw_frame, "a simple client's frame is passed on as it is");
            }
        }
    }
}
