//! Rotation notices across the cluster: every node's housekeeper sees the same due notices, so
//! each notice is claimed in the `hubbub_notices` bucket (a create, which only one node can win)
//! and only the winner queues and sends it. A node that restarts recognises its own claims. A
//! claimed notice stays with its node: if that node is gone for good before sending, the notice is
//! not sent by another (the portal and `key notices` on that node's data show it pending). A
//! claim is the claiming node's id sealed with the cluster secret; a claim that does not open
//! (no node made it) is taken over with a compare-and-set, so it cannot silence a notice.

use super::Cluster;
use crate::backplane::Claim;
use async_nats::jetstream::{self, kv};

pub const BUCKET: &str = "hubbub_notices";

pub(crate) async fn open_bucket(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<kv::Store, String> {
    super::open_kv_bucket(
        js,
        BUCKET,
        "Hubbub rotation notices: which node sends each",
        1,
        replicas,
    )
    .await
}

/// What a sealed claim is bound to.
fn context(key: &str) -> String {
    format!("{BUCKET}/{key}")
}

/// A notice's dedup key as a bucket key (hex: bucket keys allow few characters).
pub fn claim_key(dedup: &str) -> String {
    dedup.bytes().map(|b| format!("{b:02x}")).collect()
}

impl Cluster {
    /// Claims the notice `dedup` for this node, unless another node already has. (Notices a node
    /// has settled are not asked about again: the caller remembers them.)
    pub async fn claim_notice(&self, dedup: &str) -> Claim {
        if !self.connected() {
            return Claim::Unknown;
        }
        let key = claim_key(dedup);
        let ours = self
            .wire
            .secret
            .seal(&context(&key), self.node_id.as_bytes());
        let claimed = tokio::time::timeout(
            super::REQUEST_TIMEOUT,
            self.notices.create(&key, ours.clone()),
        )
        .await;
        match claimed {
            Ok(Ok(_)) => Claim::Mine,
            Ok(Err(e)) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                let entry =
                    tokio::time::timeout(super::REQUEST_TIMEOUT, self.notices.entry(&key)).await;
                let Ok(Ok(Some(entry))) = entry else {
                    return Claim::Unknown;
                };
                match self.wire.open(&context(&key), &entry.value) {
                    Some(owner) if owner == self.node_id.as_bytes() => Claim::Mine,
                    Some(_) => Claim::Theirs,
                    // No node made this claim: take it over (one node wins the race).
                    None => match self.notices.update(&key, ours, entry.revision).await {
                        Ok(_) => Claim::Mine,
                        Err(_) => Claim::Unknown,
                    },
                }
            }
            _ => Claim::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_keys_are_valid_bucket_keys_and_distinct() {
        let a = claim_key("rotation_required:primary:v3");
        let b = claim_key("rotation_required:primary:v4");
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
