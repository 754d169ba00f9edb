//! Revocation with disconnect: when a ring in force carries a revocation this node has not
//! enforced yet (made here, or by another node), every connection of this node whose token a
//! value of that slot up to the revoked version signed is closed, its reliable session ended for
//! good, the app server told, and the count audited. The same path on one node or many: the
//! revocation travels with the key ring.

use crate::keys::Revocation;
use crate::state::AppState;
use crate::store::AuditEvent;

/// Revocations remembered as enforced, with what they closed here (the latest ones).
const REMEMBERED: usize = 32;

/// The close reason clients and the app server see.
pub fn reason(revocation: &Revocation) -> String {
    format!(
        "The {} key that signed this connection's token was revoked.",
        revocation.slot
    )
}

impl AppState {
    /// Enforces every revocation of the ring in force that this node has not yet enforced, and
    /// returns how many connections `of` closed here (0 when it is not in the ring).
    pub async fn enforce_revocations(&self, of: Option<&Revocation>) -> usize {
        let mut enforced = self.revocations.0.lock().await;
        let ring = self.keys.current();
        for revocation in &ring.revocations {
            if enforced.iter().any(|(r, _)| r == revocation) {
                continue;
            }
            let closed = self.close_revoked(revocation).await;
            enforced.push((*revocation, closed));
            if enforced.len() > REMEMBERED {
                enforced.remove(0);
            }
        }
        of.and_then(|of| enforced.iter().find(|(r, _)| r == of))
            .map_or(0, |(_, closed)| *closed)
    }

    async fn close_revoked(&self, revocation: &Revocation) -> usize {
        let reason = reason(revocation);
        let mut closed = 0;
        for hub in self.hubs.all() {
            for connection in hub.close_matching(
                |c| revocation.covers(c.signed_by),
                &reason,
                crate::dataplane::connection::CloseCause::KeyRevoked,
            ) {
                self.departed(&connection, &reason);
                closed += 1;
            }
        }
        if closed > 0 {
            let node = self.backplane.node_id().unwrap_or("this node").to_string();
            let event = AuditEvent {
                at: self.keys.clock().now_millis(),
                event: "connections_closed",
                slot: Some(revocation.slot),
                old_version: Some(revocation.up_to_version),
                actor: "policy".into(),
                detail: Some(format!(
                    "{closed} connection(s) on {node} whose token the revoked {} key signed",
                    revocation.slot
                )),
                dedup: Some(format!(
                    "connections_closed/{}/{}/{node}",
                    revocation.slot.as_str(),
                    revocation.up_to_version
                )),
                ..AuditEvent::default()
            };
            if let Err(e) = self.backplane.record(&self.keys, event).await {
                tracing::warn!(error = %e, "could not record the connections a revocation closed");
            }
            tracing::info!(slot = %revocation.slot, closed, "closed the connections of a revoked key");
        }
        closed
    }

    /// Enforces revocations whenever a new ring is in force, until shutdown.
    pub async fn watch_revocations(self) {
        let mut changes = self.keys.changes();
        loop {
            self.enforce_revocations(None).await;
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }
}
