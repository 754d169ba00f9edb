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

/// Presence events being sent at once; while all are busy the queue fills, then drops.
pub const IN_FLIGHT: usize = 64;

/// Sends each join and leave to the hub's handler for `joined` / `left`, if it has one, at most
/// [`IN_FLIGHT`] at a time: a slow app server backs the queue up, never the number of tasks.
pub async fn run(state: AppState, mut memberships: mpsc::Receiver<Membership>) {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
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
        let Some(handler) = settings.system_handler(event).cloned() else {
            continue;
        };
        let permit = tokio::select! {
            () = state.shutdown.cancelled() => return,
            permit = Arc::clone(&in_flight).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let upstream = Arc::clone(&state.upstream);
        let ctx = EventContext::of(&membership.connection);
        let body = serde_json::json!({ "group": &*membership.group });
        state.sockets.spawn(async move {
            upstream.send_system(&handler, ctx, event, body).await;
            drop(permit);
        });
    }
}
