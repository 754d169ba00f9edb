//! Group presence events: every join and leave of a group, as the CloudEvents
//! `azure.webpubsub.gp.joined` and `azure.webpubsub.gp.left` (body `{"group": …}`), to the event
//! handler that takes the `joined` or `left` system event (what `@azure/web-pubsub-express` 1.1.0
//! hands to `onGroupJoined` / `onGroupLeft`). Non-blocking, like `connected`: the hubs report
//! joins and leaves into a bounded queue (never waiting under their lock), one task sends them.
//! A connection's groups end with it without `left` events (`disconnected` says it), and a
//! reliable session that moves to another node does not join again.

use super::*;
use crate::dataplane::hub::{Hubs, Membership};
use crate::upstream::hub_settings::HubSettings;
use tokio::sync::mpsc;

/// Joins and leaves waiting to be sent; beyond this they are dropped and counted.
pub const QUEUE: usize = 4096;

/// Has the hubs report joins and leaves of hubs whose settings send them somewhere; [`run`]
/// sends them.
pub fn follow(hubs: &Hubs, settings: Arc<HubSettings>) -> mpsc::Receiver<Membership> {
    let (sender, receiver) = mpsc::channel(QUEUE);
    let counts = hubs.counts();
    hubs.set_membership(Arc::new(move |membership| {
        let event = if membership.joined { "joined" } else { "left" };
        if settings
            .get(&membership.connection.hub)
            .system_handler(event)
            .is_none()
        {
            return;
        }
        if sender.try_send(membership).is_err() {
            counts
                .presence_events
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }));
    receiver
}

/// Sends each join and leave to the hub's handler for `joined` / `left`, if it has one.
pub async fn run(state: AppState, mut memberships: mpsc::Receiver<Membership>) {
    loop {
        let membership = tokio::select! {
            () = state.shutdown.cancelled() => return,
            next = memberships.recv() => match next {
                Some(membership) => membership,
                None => return,
            },
        };
        let event = if membership.joined { "joined" } else { "left" };
        let settings = state.hub_settings.get(&membership.connection.hub);
        state.upstream.notify(
            &settings,
            EventContext::of(&membership.connection),
            event,
            serde_json::json!({ "group": &*membership.group }),
        );
    }
}
