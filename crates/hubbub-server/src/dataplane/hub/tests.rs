//! Membership, fan-out, no-echo, paging and removal of a hub.

use super::*;
use crate::dataplane::connection::Protocol;
use bytes::Bytes;
use hubbub_proto::client_protocol::DataType;
use hubbub_proto::roles::Permissions;

fn conn(id: &str, user: Option<&str>) -> Arc<Connection> {
    Arc::new(Connection::new(
        id.into(),
        "h".into(),
        user.map(Into::into),
        Protocol::json(),
        Permissions::default(),
    ))
}

fn received(c: &Connection) -> usize {
    c.take_batch(1).unwrap().frames.len()
}

#[test]
fn membership_and_fan_out() {
    let hub = Hub::new("h".into(), None);
    let (a, b, c) = (
        conn("a", Some("u1")),
        conn("b", Some("u1")),
        conn("c", None),
    );
    hub.add(Arc::clone(&a), &["g1".into()]);
    hub.add(Arc::clone(&b), &[]);
    hub.add(Arc::clone(&c), &["g1".into(), "g2".into()]);
    let m = Outgoing::server(DataType::Text, Bytes::from_static(b"x"));
    assert_eq!(hub.send_to_group("g1", &m, &Selection::default()), 2);
    assert_eq!(hub.send_to_user("u1", &m, &Selection::default()), 2);
    let excluded = Selection {
        excluded: ["a"].into_iter().collect(),
        filter: None,
    };
    assert_eq!(hub.send_to_all(&m, &excluded), 2);
    assert_eq!((received(&a), received(&b), received(&c)), (2, 2, 2));
    hub.add_user_to_group("u1", "g2");
    assert!(hub.is_member("b", "g2"));
    hub.remove_user_from_all_groups("u1");
    assert!(!hub.is_member("a", "g1"));
    assert!(hub.has_group("g1"), "c is still in g1");
    hub.remove(&c);
    assert!(!hub.has_group("g1"));
    assert!(hub.has_user("u1"));
    hub.remove(&a);
    hub.remove(&b);
    assert!(!hub.has_user("u1"));
    assert_eq!(hub.connection_count(), 0);
}

#[test]
fn no_echo_skips_the_sender() {
    let hub = Hub::new("h".into(), None);
    let (a, b) = (conn("a", None), conn("b", None));
    hub.add(Arc::clone(&a), &["g".into()]);
    hub.add(Arc::clone(&b), &["g".into()]);
    let m = Outgoing::group("g".into(), None, DataType::Text, Bytes::from_static(b"x"))
        .with_sender("a".into(), true);
    assert_eq!(hub.send_to_group("g", &m, &Selection::default()), 1);
    assert_eq!((received(&a), received(&b)), (0, 1));
}

#[test]
fn paging_lists_each_connection_once() {
    let hub = Hub::new("h".into(), None);
    for i in 0..5 {
        hub.add(conn(&format!("c{i}"), None), &["g".into()]);
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (page, more) = hub.list_group("g", after.as_deref(), 2);
        seen.extend(page.iter().map(|c| c.connection_id.to_string()));
        after = page.last().map(|c| c.connection_id.to_string());
        if !more {
            break;
        }
    }
    assert_eq!(seen, ["c0", "c1", "c2", "c3", "c4"]);
}

#[test]
fn removing_only_the_same_connection_object() {
    let hub = Hub::new("h".into(), None);
    let first = conn("a", None);
    hub.add(Arc::clone(&first), &[]);
    let impostor = conn("a", None);
    assert!(!hub.remove(&impostor));
    assert!(hub.remove(&first));
}

#[test]
fn a_connection_under_an_id_in_use_displaces_the_holder_whole() {
    let hub = Hub::new("h".into(), None);
    let first = conn("a", Some("u1"));
    assert!(hub.add(Arc::clone(&first), &["old".into()]).is_none());
    let second = conn("a", Some("u2"));
    let displaced = hub.add(Arc::clone(&second), &["new".into()]);
    assert!(displaced.is_some_and(|d| Arc::ptr_eq(&d, &first)));
    assert!(
        !hub.is_member("a", "old"),
        "the holder's groups went with it"
    );
    assert!(hub.is_member("a", "new"));
    assert!(!hub.has_user("u1") && hub.has_user("u2"));
    assert!(!hub.remove(&first), "already out");
    assert_eq!(hub.connection_count(), 1);
    let message =
        Outgoing::server(DataType::Text, Bytes::from_static(b"x")).into_group("old".into());
    assert_eq!(hub.send_to_group("old", &message, &Selection::default()), 0);
}

#[test]
fn joins_and_leaves_are_reported_but_not_a_moved_session_or_an_ending() {
    let hubs = Hubs::default();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    hubs.set_membership(Arc::new(move |m: Membership| {
        record
            .lock()
            .unwrap()
            .push((m.connection.id.to_string(), m.group.to_string(), m.joined));
    }));
    let hub = hubs.get_or_create("h");
    let (a, b) = (conn("a", None), conn("b", None));
    hub.add(Arc::clone(&a), &["g".into()]);
    hub.add_moved(Arc::clone(&b), &["g".into()]);
    assert!(
        hub.is_member("b", "g"),
        "a moved session is in its groups again"
    );
    hub.join("a", "g").unwrap();
    hub.join("a", "h").unwrap();
    hub.leave("a", "h");
    hub.leave("a", "h");
    hub.remove(&a);
    let taken = |id: &str, g: &str, joined| (id.to_string(), g.to_string(), joined);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            taken("a", "g", true),
            taken("a", "h", true),
            taken("a", "h", false)
        ],
        "each real join and leave once; none for b, a repeated join or leave, or a's end"
    );
}
