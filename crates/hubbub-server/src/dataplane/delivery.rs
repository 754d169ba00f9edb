//! A delivery: one message for one target of a hub (every connection, a group, a user or one
//! connection), with the connections to skip and an optional filter. The REST send handlers, the
//! client protocols and the backplane (for messages from other nodes) all hand a [`Delivery`] to
//! [`deliver`], which fans it out to this node's connections.

use super::filter::Filter;
pub use super::hub::Target;
use super::hub::{Hubs, Selection};
use super::message::Outgoing;

/// One message on its way to a target's connections.
#[derive(Debug)]
pub struct Delivery {
    /// The canonical hub name.
    pub hub: String,
    pub target: Target,
    /// Connection ids that must not get it.
    pub excluded: Vec<String>,
    /// The OData filter selecting connections, as parsed, and as written (for other nodes).
    pub filter: Option<(Filter, String)>,
    pub message: Outgoing,
}

impl Delivery {
    pub fn new(hub: &str, target: Target, message: Outgoing) -> Self {
        Self {
            hub: super::hub::canonical_hub(hub),
            target,
            excluded: Vec::new(),
            filter: None,
            message,
        }
    }

    pub fn excluding(mut self, excluded: Vec<String>) -> Self {
        self.excluded = excluded;
        self
    }

    pub fn filtered(mut self, filter: Option<(Filter, String)>) -> Self {
        self.filter = filter;
        self
    }

    /// The filter as written, for other nodes.
    pub fn filter_text(&self) -> Option<&str> {
        self.filter.as_ref().map(|(_, text)| text.as_str())
    }
}

/// A change of one member's state in `group` (`None`: cleared), for the group's followers on
/// every node.
pub fn group_state_change(
    connection: &super::connection::Connection,
    group: &str,
    pairs: Option<hubbub_proto::client_protocol::Metadata>,
    at: i64,
) -> Delivery {
    let item = hubbub_proto::client_protocol::GroupStateItem {
        connection_id: connection.id.to_string(),
        user_id: connection.user_id.as_deref().map(str::to_owned),
        state: pairs,
        updated_at: at,
    };
    let message = Outgoing::group_state_update(group.into(), vec![item]);
    Delivery::new(&connection.hub, Target::Group(group.to_string()), message)
}

/// A connection that ended: its state in each group is cleared, for the followers.
pub fn group_state_ended(connection: &super::connection::Connection, at: i64) -> Vec<Delivery> {
    let groups: Vec<String> = match connection.state().extras_mut() {
        Some(extras) => extras.group_state.drain().map(|(group, _)| group).collect(),
        None => Vec::new(),
    };
    groups
        .iter()
        .map(|group| group_state_change(connection, group, None, at))
        .collect()
}

/// What a delivery found on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// Handed to this many selected connections here (possibly none).
    Here(usize),
    /// For one connection, which is not on this node.
    NotHere,
}

/// Fans a delivery out to this node's connections.
pub fn deliver(hubs: &Hubs, delivery: &Delivery) -> Delivered {
    let Some(hub) = hubs.get(&delivery.hub) else {
        return match delivery.target {
            Target::Connection(_) => Delivered::NotHere,
            _ => Delivered::Here(0),
        };
    };
    let selection = Selection {
        excluded: delivery.excluded.iter().map(String::as_str).collect(),
        filter: delivery.filter.as_ref().map(|(filter, _)| filter),
    };
    let message = &delivery.message;
    Delivered::Here(match &delivery.target {
        Target::All => hub.send_to_all(message, &selection),
        Target::Group(group) => hub.send_to_group(group, message, &selection),
        Target::User(user) => hub.send_to_user(user, message, &selection),
        Target::Connection(id) => {
            if !hub.send_to_connection(id, message) {
                return Delivered::NotHere;
            }
            1
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::connection::{Connection, Protocol};
    use bytes::Bytes;
    use hubbub_proto::client_protocol::DataType;
    use hubbub_proto::roles::Permissions;
    use std::sync::Arc;

    #[test]
    fn targets_keep_their_wire_shape() {
        let json = serde_json::to_string(&Target::Group("room 1".into())).unwrap();
        assert_eq!(json, r#"{"to":"group","name":"room 1"}"#);
        assert_eq!(
            serde_json::to_string(&Target::All).unwrap(),
            r#"{"to":"all"}"#
        );
        let back: Target = serde_json::from_str(r#"{"to":"connection","name":"n-1"}"#).unwrap();
        assert_eq!(back.connection_id(), Some("n-1"));
    }

    #[test]
    fn a_delivery_reaches_the_selected_connections_and_says_when_its_connection_is_elsewhere() {
        let hubs = Hubs::default();
        let hub = hubs.get_or_create("Chat");
        let connection = |id: &str, user: &str| {
            Arc::new(Connection::new(
                id.into(),
                "chat".into(),
                Some(user.into()),
                Protocol::json(),
                Permissions::default(),
            ))
        };
        let (a, b) = (connection("a", "u1"), connection("b", "u2"));
        hub.add(Arc::clone(&a), &["g".into()]);
        hub.add(Arc::clone(&b), &["g".into()]);
        let text = || Outgoing::server(DataType::Text, Bytes::from_static(b"x"));
        let filter = Filter::parse("userId eq 'u2'").unwrap();
        let to_group = Delivery::new("CHAT", Target::Group("g".into()), text())
            .filtered(Some((filter, "userId eq 'u2'".into())));
        assert_eq!(deliver(&hubs, &to_group), Delivered::Here(1));
        let to_all = Delivery::new("chat", Target::All, text()).excluding(vec!["a".into()]);
        assert_eq!(deliver(&hubs, &to_all), Delivered::Here(1));
        let frames = |c: &Connection| c.take_batch(1).unwrap().frames.len();
        assert_eq!(frames(&a), 0, "a was filtered out, then excluded");
        assert_eq!(frames(&b), 2);
        let elsewhere = Delivery::new("chat", Target::Connection("n2-1".into()), text());
        assert_eq!(deliver(&hubs, &elsewhere), Delivered::NotHere);
        let no_hub = Delivery::new("other", Target::Connection("a".into()), text());
        assert_eq!(deliver(&hubs, &no_hub), Delivered::NotHere);
    }
}
