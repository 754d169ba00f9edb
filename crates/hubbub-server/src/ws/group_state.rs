//! Group state: each member of a group may set a small dictionary of its own there
//! (`setGroupState`); members that follow the group's state (`subscribeGroupState`) get a
//! snapshot of every member's state, then each change (`groupStateUpdate`). A member's state is
//! cleared when it clears it, leaves the group, or its connection ends.

use super::*;
use crate::dataplane::{delivery, ops};
use hubbub_proto::client_protocol::check_metadata_pair;

/// The most bytes (keys and values) of state one connection may set in one group, and the most
/// pairs.
pub const MAX_GROUP_STATE_BYTES: usize = 4 * 1024;
pub const MAX_GROUP_STATE_PAIRS: usize = 64;

/// Checks a state dictionary: keys and values as metadata's, within the group state's bounds.
fn check_state(pairs: &Metadata) -> Result<(), String> {
    if pairs.len() > MAX_GROUP_STATE_PAIRS {
        return Err(format!(
            "group state may have at most {MAX_GROUP_STATE_PAIRS} entries"
        ));
    }
    let mut total = 0;
    for (key, value) in pairs {
        check_metadata_pair(key, value, &mut total)
            .map_err(|e| e.replacen("metadata", "group state", 1))?;
        if total > MAX_GROUP_STATE_BYTES {
            return Err(format!(
                "group state is larger than {MAX_GROUP_STATE_BYTES} bytes"
            ));
        }
    }
    Ok(())
}

/// Group state needs membership of the group.
fn member(hub: &Hub, connection: &Connection, group: &str) -> Result<(), (&'static str, String)> {
    api::validate_group(group).map_err(|e| ("BadRequest", e.message))?;
    if !hub.is_member(&connection.id, group) {
        return Err((
            "Forbidden",
            format!("The client is not a member of group '{group}'."),
        ));
    }
    Ok(())
}

/// `setGroupState`: sets (or, without `state`, clears) this connection's state in `group`.
pub(super) fn set(
    state: &AppState,
    hub: &Hub,
    connection: &Arc<Connection>,
    group: String,
    ack_id: Option<u64>,
    pairs: Option<Metadata>,
) {
    let result = member(hub, connection, &group).and_then(|()| {
        if let Some(pairs) = &pairs {
            check_state(pairs).map_err(|message| {
                state
                    .hubs
                    .limit_counts()
                    .group_state
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                ("BadRequest", message)
            })?;
        }
        let now = state.keys.clock().now_millis();
        {
            let mut connection_state = connection.state();
            if ack_id.is_some_and(|id| !connection_state.first_time(id)) {
                return Err(duplicate(ack_id));
            }
            match &pairs {
                Some(pairs) => {
                    connection_state
                        .extras()
                        .group_state
                        .insert(group.clone(), (pairs.clone(), now));
                }
                None => {
                    connection_state.extras().group_state.remove(&group);
                }
            }
        }
        announce(state, connection, &group, pairs, now);
        Ok(())
    });
    ack(connection, ack_id, result);
}

/// Tells the group's followers, on every node, of one member's new state.
fn announce(
    state: &AppState,
    connection: &Connection,
    group: &str,
    pairs: Option<Metadata>,
    at: i64,
) {
    state.send(&delivery::group_state_change(connection, group, pairs, at));
}

/// `subscribeGroupState`: acknowledged, then a snapshot of every member's state on every node.
pub(super) fn subscribe(
    state: &AppState,
    hub: &Hub,
    connection: &Arc<Connection>,
    group: String,
    ack_id: Option<u64>,
) {
    if let Err(error) = member(hub, connection, &group) {
        return ack(connection, ack_id, Err(error));
    }
    let gathering = {
        let mut connection_state = connection.state();
        connection_state
            .extras()
            .state_subscriptions
            .insert(group.clone());
        // One snapshot of a group at a time per connection: a subscribe while one is being
        // gathered is answered by that one.
        !connection_state
            .extras()
            .snapshots_pending
            .insert(group.clone())
    };
    ack(connection, ack_id, Ok(()));
    if gathering {
        return;
    }
    let mut items = hub.group_state(&group);
    let tasks = state.sockets.clone();
    let (state, connection) = (state.clone(), Arc::clone(connection));
    tasks.spawn(async move {
        let question = ops::Question::new(
            &connection.hub,
            ops::Ask::GroupState {
                group: group.clone(),
            },
        );
        for answer in state.backplane.ask(&question, ops::all).await {
            items.extend(answer.group_state);
        }
        items.sort_by(|a, b| a.connection_id.cmp(&b.connection_id));
        items.dedup_by(|a, b| a.connection_id == b.connection_id);
        connection.state().extras().snapshots_pending.remove(&group);
        connection.reply(&Reply::GroupState {
            snapshot: true,
            group: &group,
            items: &items,
        });
    });
}

/// `unsubscribeGroupState`.
pub(super) fn unsubscribe(connection: &Connection, group: String, ack_id: Option<u64>) {
    if let Err(e) = api::validate_group(&group) {
        return ack(connection, ack_id, Err(("BadRequest", e.message)));
    }
    connection
        .state()
        .extras()
        .state_subscriptions
        .remove(&group);
    ack(connection, ack_id, Ok(()));
}

/// The connection left `group` (its state there is gone with its membership, however it left):
/// followers hear it was cleared.
pub(super) fn cleared(state: &AppState, connection: &Connection, group: &str) {
    let now = state.keys.clock().now_millis();
    announce(state, connection, group, None, now);
}
