//! Rotation notices across the cluster: every node's housekeeper sees the same due notices, so
//! each notice is claimed in the `hubbub_notices` bucket (a create, which only one node can win)
//! and only the winner queues and sends it. A node that restarts recognises its own claims. A
//! claimed notice stays with its node: if that node is gone for good before sending, the notice is
//! not sent by another (the portal and `key notices` on that node's data show it pending).

use super::Cluster;
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

/// Who sends a notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This node: queue and send it.
    Mine,
    /// Another node sends it.
    Theirs,
    /// NATS did not answer; ask again at the next tick.
    Unknown,
}

/// A notice's dedup key as a bucket key (hex: bucket keys allow few characters).
pub fn claim_key(dedup: &str) -> String {
    dedup.bytes().map(|b| format!("{b:02x}")).collect()
}

impl Cluster {
    /// Claims the notice `dedup` for this node, unless another node already has.
    pub async fn claim_notice(&self, dedup: &str) -> Claim {
        if !self.connected() {
            return Claim::Unknown;
        }
        let key = claim_key(dedup);
        let claimed = tokio::time::timeout(
            super::REQUEST_TIMEOUT,
            self.notices
                .create(&key, self.node_id.as_bytes().to_vec().into()),
        )
        .await;
        match claimed {
            Ok(Ok(_)) => Claim::Mine,
            Ok(Err(e)) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                match tokio::time::timeout(super::REQUEST_TIMEOUT, self.notices.get(&key)).await {
                    Ok(Ok(Some(owner))) if owner.as_ref() == self.node_id.as_bytes() => Claim::Mine,
                    Ok(Ok(Some(_))) => Claim::Theirs,
                    _ => Claim::Unknown,
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
