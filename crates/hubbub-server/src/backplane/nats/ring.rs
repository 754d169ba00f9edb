//! The key ring in the cluster: one JSON document under the key `ring` of the `hubbub_keys`
//! bucket. Every change reads the document and its revision, applies the change, and writes it
//! back on condition that the revision is unchanged; a node that lost the race reads again and
//! reapplies its change, so concurrent changes on several nodes all take effect, one after the
//! other. Every node watches the key and installs each new ring (local SQLite mirror first, then
//! the in-memory swap); a generation number inside the document keeps an older ring from ever
//! replacing a newer one. The document is sealed with the cluster secret (see
//! [`seal`](super::seal)): NATS never holds a key in clear, and a ring written by anyone without
//! the secret is refused. The last installed generation is kept in the local store, so a ring
//! replayed from an earlier recording (a revoked key brought back) is refused after a restart
//! too, and this node's newer ring is written back over it.

use super::{Cluster, ClusterError};
use crate::clock::UnixMillis;
use crate::keys::{KeyRing, Keys, SlotKey};
use crate::secret::Secret;
use crate::store::{PreviousKey, RetiringKey, RotationRequirement};
use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use hubbub_proto::keys::KeySlot;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const BUCKET: &str = "hubbub_keys";
pub const RING_KEY: &str = "ring";
/// What a sealed ring is bound to: a value sealed for another bucket or key does not open here.
const SEAL_CONTEXT: &str = "hubbub_keys/ring";
/// Revisions of the ring kept in the bucket: the current one only, so that no old key value
/// survives a regeneration in the bucket's history (a bucket made with more is cut down at start).
const HISTORY: i64 = 1;
/// A change that keeps losing the race this often gives up (only under pathological contention).
const MAX_CAS_ATTEMPTS: usize = 64;
/// How often a node re-reads the ring even without a watch event (belt and braces).
const RESYNC_INTERVAL: Duration = Duration::from_secs(5);

/// Opens the bucket, creating it with `replicas` replicas when it does not exist yet. The
/// bucket's stream is created here with the settings a key-value bucket has (the client's own
/// bucket creation first reads account details that nats-server 2.9 words differently).
pub(crate) async fn open_bucket(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<kv::Store, String> {
    super::open_kv_bucket(
        js,
        BUCKET,
        "Hubbub key ring (primary, secondary, salt, requirements, retiring keys)",
        HISTORY,
        replicas,
    )
    .await
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SlotDoc {
    value: String,
    version: u64,
    created_at: UnixMillis,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequirementDoc {
    slot: String,
    version: u64,
    deadline: UnixMillis,
    reason: String,
    required_at: UnixMillis,
    actor: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RetiringDoc {
    slot: String,
    version: u64,
    value: String,
    until: UnixMillis,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PreviousDoc {
    slot: String,
    version: u64,
    value: String,
    replaced_at: UnixMillis,
}

/// The stored form of the ring. Holds key material: never logged.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RingDoc {
    /// Bumped by every change: a node installs a ring only if its generation is higher.
    generation: u64,
    primary: SlotDoc,
    secondary: SlotDoc,
    salt: SlotDoc,
    #[serde(default)]
    requirements: Vec<RequirementDoc>,
    #[serde(default)]
    retiring: Vec<RetiringDoc>,
    #[serde(default)]
    previous: Vec<PreviousDoc>,
    #[serde(default)]
    revocations: Vec<crate::keys::Revocation>,
    #[serde(default)]
    policy: Option<crate::keys::policy::RotationPolicy>,
    #[serde(default)]
    local_auth_disabled: bool,
}

fn slot_doc(key: &SlotKey) -> SlotDoc {
    SlotDoc {
        value: key.value.expose().to_string(),
        version: key.version,
        created_at: key.created_at,
    }
}

fn slot_key(doc: &SlotDoc) -> Result<SlotKey, ClusterError> {
    if doc.value.is_empty() || doc.version == 0 {
        return Err(ClusterError::BadRing("a key slot is empty".into()));
    }
    Ok(SlotKey {
        value: Secret::new(doc.value.clone()),
        version: doc.version,
        created_at: doc.created_at,
    })
}

fn parse_slot(name: &str) -> Result<KeySlot, ClusterError> {
    name.parse()
        .map_err(|_| ClusterError::BadRing(format!("unknown key slot '{name}'")))
}

impl RingDoc {
    pub(crate) fn new(ring: &KeyRing, generation: u64) -> Self {
        Self {
            generation,
            primary: slot_doc(&ring.primary),
            secondary: slot_doc(&ring.secondary),
            salt: slot_doc(&ring.salt),
            requirements: ring
                .requirements
                .iter()
                .map(|r| RequirementDoc {
                    slot: r.slot.as_str().into(),
                    version: r.version,
                    deadline: r.deadline,
                    reason: r.reason.clone(),
                    required_at: r.required_at,
                    actor: r.actor.clone(),
                })
                .collect(),
            retiring: ring
                .retiring
                .iter()
                .map(|k| RetiringDoc {
                    slot: k.slot.as_str().into(),
                    version: k.version,
                    value: k.value.expose().to_string(),
                    until: k.until,
                })
                .collect(),
            previous: ring
                .previous
                .iter()
                .map(|k| PreviousDoc {
                    slot: k.slot.as_str().into(),
                    version: k.version,
                    value: k.value.expose().to_string(),
                    replaced_at: k.replaced_at,
                })
                .collect(),
            revocations: ring.revocations.clone(),
            policy: ring.policy.clone(),
            local_auth_disabled: ring.local_auth_disabled,
        }
    }

    pub(crate) fn ring(&self) -> Result<KeyRing, ClusterError> {
        Ok(KeyRing {
            primary: slot_key(&self.primary)?,
            secondary: slot_key(&self.secondary)?,
            salt: slot_key(&self.salt)?,
            requirements: self
                .requirements
                .iter()
                .map(|r| {
                    Ok(RotationRequirement {
                        slot: parse_slot(&r.slot)?,
                        version: r.version,
                        deadline: r.deadline,
                        reason: r.reason.clone(),
                        required_at: r.required_at,
                        actor: r.actor.clone(),
                    })
                })
                .collect::<Result<_, ClusterError>>()?,
            retiring: self
                .retiring
                .iter()
                .map(|k| {
                    Ok(RetiringKey {
                        slot: parse_slot(&k.slot)?,
                        version: k.version,
                        value: Secret::new(k.value.clone()),
                        until: k.until,
                    })
                })
                .collect::<Result<_, ClusterError>>()?,
            previous: self
                .previous
                .iter()
                .map(|k| {
                    Ok(PreviousKey {
                        slot: parse_slot(&k.slot)?,
                        version: k.version,
                        value: Secret::new(k.value.clone()),
                        replaced_at: k.replaced_at,
                    })
                })
                .collect::<Result<_, ClusterError>>()?,
            revocations: self.revocations.clone(),
            policy: self.policy.clone(),
            local_auth_disabled: self.local_auth_disabled,
        })
    }

    /// The document sealed for the bucket.
    pub(crate) fn seal(&self, secret: &super::seal::ClusterSecret) -> bytes::Bytes {
        secret.seal(SEAL_CONTEXT, &serde_json::to_vec(self).unwrap_or_default())
    }

    /// The document of a sealed bucket value.
    pub(crate) fn open(wire: &super::wire::Wire, sealed: &[u8]) -> Result<Self, ClusterError> {
        let plain = wire.open(SEAL_CONTEXT, sealed).ok_or_else(|| {
            ClusterError::BadRing(
                "it is not sealed with this node's cluster secret: another node has a different cluster_secret_file, the ring was written before cluster secrets (then remove it with `nats kv del hubbub_keys ring` and start one node: it writes its own keys, which every node mirrors), or something other than a Hubbub node wrote it".into(),
            )
        })?;
        Self::decode(&plain)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, ClusterError> {
        // The serde error may quote the input, which holds keys: say only where it failed.
        serde_json::from_slice(bytes).map_err(|e| {
            ClusterError::BadRing(format!(
                "not a key ring document (line {}, column {})",
                e.line(),
                e.column()
            ))
        })
    }
}

/// The ring in the bucket as read.
enum Current {
    Missing,
    /// The document and its bucket revision.
    Ring(Box<RingDoc>, u64),
    /// A value that does not open with the cluster secret, at this revision.
    Refused(u64, ClusterError),
}

/// Keeps this node's key ring equal to the cluster's.
pub(crate) struct RingSync {
    kv: kv::Store,
    /// To create the bucket again if JetStream lost it.
    js: jetstream::Context,
    replicas: usize,
    keys: Keys,
    wire: super::wire::Wire,
    /// The generation installed last (kept in the store across restarts); held while a ring is
    /// installed, so installs are ordered.
    installed: tokio::sync::Mutex<u64>,
}

impl RingSync {
    pub(crate) fn new(
        kv: kv::Store,
        js: jetstream::Context,
        replicas: usize,
        keys: Keys,
        wire: super::wire::Wire,
    ) -> Result<Self, ClusterError> {
        let installed = keys.store().ring_generation()?;
        Ok(Self {
            kv,
            js,
            replicas,
            keys,
            wire,
            installed: tokio::sync::Mutex::new(installed),
        })
    }

    pub(crate) fn clock(&self) -> crate::clock::SharedClock {
        self.keys.clock().clone()
    }

    /// Installs the ring of `doc` unless a ring at least as new is installed already. Returns the
    /// ring now current.
    pub(crate) async fn install(&self, doc: &RingDoc) -> Result<Arc<KeyRing>, ClusterError> {
        let mut installed = self.installed.lock().await;
        if doc.generation <= *installed {
            return Ok(self.keys.current());
        }
        let ring = doc.ring()?;
        let keys = self.keys.clone();
        let generation = doc.generation;
        let ring = tokio::task::spawn_blocking(move || {
            let ring = keys.install(ring)?;
            keys.store().set_ring_generation(generation)?;
            Ok::<_, crate::store::StoreError>(ring)
        })
        .await
        .map_err(|_| ClusterError::Failed("the key ring install was interrupted".into()))??;
        *installed = doc.generation;
        Ok(ring)
    }

    /// At start (`joining`), after NATS comes back and every few seconds: adopts the cluster's
    /// ring, or seeds the bucket with this node's ring when it has none (a create that fails if
    /// another node seeded it first). A ring older than the one installed here is replaced with
    /// this node's. A ring that does not open with the cluster secret is refused: at start the
    /// node does not start (its secret may be the wrong one); once running, it writes its own
    /// ring (the cluster's, as last installed) over it.
    pub(crate) async fn adopt(&self, joining: bool) -> Result<Arc<KeyRing>, ClusterError> {
        loop {
            match self.read().await? {
                Current::Ring(doc, revision) => {
                    let installed = *self.installed.lock().await;
                    if doc.generation >= installed {
                        return self.install(&doc).await;
                    }
                    // An older ring than this node installed: a replay, or a bucket restored
                    // from an old copy. This node's ring (the newer one) goes back.
                    tracing::warn!(
                        cluster = doc.generation,
                        installed,
                        "the cluster's key ring is older than the one this node installed; writing this node's ring back"
                    );
                    if self.write_back(revision).await? {
                        return Ok(self.keys.current());
                    }
                }
                Current::Refused(_, error) if joining => return Err(error),
                Current::Refused(revision, _) => {
                    tracing::warn!("the cluster's key ring was written by something without the cluster secret; writing this node's ring back");
                    if self.write_back(revision).await? {
                        return Ok(self.keys.current());
                    }
                }
                Current::Missing => {
                    let generation = (*self.installed.lock().await).max(1);
                    let doc = RingDoc::new(&self.keys.current(), generation);
                    match self.kv.create(RING_KEY, doc.seal(&self.wire.secret)).await {
                        Ok(_) => {
                            tracing::info!("seeded the cluster's key bucket with this node's keys");
                            *self.installed.lock().await = generation;
                            return Ok(self.keys.current());
                        }
                        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => continue,
                        Err(e) => return Err(ClusterError::Failed(e.to_string())),
                    }
                }
            }
        }
    }

    /// Writes this node's ring, at the generation installed here, over bucket revision
    /// `revision`. `false`: the bucket changed meanwhile (read it again).
    async fn write_back(&self, revision: u64) -> Result<bool, ClusterError> {
        let installed = (*self.installed.lock().await).max(1);
        let ours = RingDoc::new(&self.keys.current(), installed);
        match self
            .kv
            .update(RING_KEY, ours.seal(&self.wire.secret), revision)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(unavailable(e.to_string())),
        }
    }

    /// The current document and its bucket revision.
    async fn read(&self) -> Result<Current, ClusterError> {
        let entry = self
            .kv
            .entry(RING_KEY)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        Ok(match entry {
            Some(entry) if entry.operation == kv::Operation::Put => {
                match RingDoc::open(&self.wire, &entry.value) {
                    Ok(doc) => Current::Ring(Box::new(doc), entry.revision),
                    Err(error) => Current::Refused(entry.revision, error),
                }
            }
            _ => Current::Missing,
        })
    }

    /// Applies `change` to the cluster's ring with compare-and-set, re-reading and reapplying
    /// after a lost race. `change` returns `None` when there is nothing to do. Returns the ring
    /// now installed here and what `change` said.
    pub(crate) async fn change<T>(
        &self,
        cluster: &Cluster,
        mut change: impl FnMut(&KeyRing) -> Option<(KeyRing, T)>,
    ) -> Result<(Arc<KeyRing>, Option<T>), ClusterError> {
        if !cluster.connected() {
            return Err(ClusterError::Unavailable);
        }
        for _ in 0..MAX_CAS_ATTEMPTS {
            let installed = *self.installed.lock().await;
            let (doc, revision) = match self.read().await? {
                Current::Ring(doc, revision) if doc.generation >= installed => (doc, revision),
                // Missing, refused, or older than installed here: put right first.
                Current::Ring(..) | Current::Missing | Current::Refused(..) => {
                    self.adopt(false).await?;
                    continue;
                }
            };
            let current = doc.ring()?;
            let Some((next, out)) = change(&current) else {
                return Ok((self.install(&doc).await?, None));
            };
            let next = RingDoc::new(&next, doc.generation + 1);
            match self
                .kv
                .update(RING_KEY, next.seal(&self.wire.secret), revision)
                .await
            {
                Ok(_) => return Ok((self.install(&next).await?, Some(out))),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    tracing::debug!("lost a key-ring race; re-reading and reapplying");
                }
                Err(e) => return Err(unavailable(e.to_string())),
            }
        }
        Err(ClusterError::Failed(
            "too many concurrent key changes; try again".into(),
        ))
    }
}

fn unavailable(reason: String) -> ClusterError {
    tracing::warn!(%reason, "a key-ring request to NATS failed");
    ClusterError::Unavailable
}

/// Watches the ring: installs each new revision; re-reads it when NATS comes back and every few
/// seconds, so a missed event is caught up. Runs until shutdown.
pub(crate) async fn watch(cluster: Arc<Cluster>, shutdown: CancellationToken) {
    let sync = &cluster.ring;
    let mut reconnects = cluster.reconnects();
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let mut watch = match sync.kv.watch(RING_KEY).await {
            Ok(watch) => watch,
            Err(e) => {
                tracing::debug!(error = %e, "cannot watch the key ring yet");
                if cluster.connected() {
                    // NATS is up but the bucket may be gone: resync creates it again.
                    resync(&cluster).await;
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
        };
        // What may have changed while there was no watch.
        resync(&cluster).await;
        let mut resync_timer = tokio::time::interval(RESYNC_INTERVAL);
        resync_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = reconnects.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    resync(&cluster).await;
                }
                _ = resync_timer.tick() => {
                    if cluster.connected() {
                        resync(&cluster).await;
                    }
                }
                next = watch.next() => match next {
                    Some(Ok(entry)) if entry.operation == kv::Operation::Put => {
                        match RingDoc::open(&sync.wire, &entry.value) {
                            Ok(doc) => {
                                if let Err(e) = sync.install(&doc).await {
                                    tracing::error!(error = %e, "could not install the cluster's key ring");
                                }
                            }
                            // Counted and logged as refused.
                            Err(e) => tracing::debug!(error = %e, "ignored a key ring"),
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "key-ring watch interrupted");
                        break;
                    }
                    None => break,
                },
            }
        }
    }
}

async fn resync(cluster: &Cluster) {
    let sync = &cluster.ring;
    let mut result = sync.adopt(false).await;
    if matches!(result, Err(ClusterError::Unavailable)) && cluster.connected() {
        // NATS answers but the bucket is gone (a server restarted without its store): create it
        // again; `adopt` then seeds it from this node's ring, so no key is lost.
        if open_bucket(&sync.js, sync.replicas).await.is_ok() {
            tracing::warn!("the cluster's key bucket was missing; created it again");
            result = sync.adopt(false).await;
        }
    }
    match result {
        Ok(_) | Err(ClusterError::Unavailable) => {}
        Err(e) => tracing::warn!(error = %e, "could not resync the key ring"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_document_round_trips_and_never_quotes_keys_in_errors() {
        let slot = |v: &str, version| SlotKey {
            value: Secret::new(v.into()),
            version,
            created_at: 7,
        };
        let ring = KeyRing {
            primary: slot("p", 3),
            secondary: slot("s", 1),
            salt: slot("salt", 2),
            requirements: vec![RotationRequirement {
                slot: KeySlot::Primary,
                version: 3,
                deadline: 99,
                reason: "leak".into(),
                required_at: 8,
                actor: "admin-token".into(),
            }],
            retiring: vec![RetiringKey {
                slot: KeySlot::Secondary,
                version: 0,
                value: Secret::new("old".into()),
                until: 50,
            }],
            previous: vec![PreviousKey {
                slot: KeySlot::Primary,
                version: 2,
                value: Secret::new("earlier".into()),
                replaced_at: 40,
            }],
            revocations: vec![crate::keys::Revocation {
                slot: KeySlot::Primary,
                up_to_version: 2,
                at: 40,
            }],
            policy: None,
            local_auth_disabled: true,
        };
        let secret = super::super::seal::ClusterSecret::from_text(
            "a-cluster-secret-of-at-least-32-characters",
        )
        .unwrap();
        let sealed = RingDoc::new(&ring, 4).seal(&secret);
        assert!(!sealed.windows(2).any(|w| w == b"\"p"), "sealed, not JSON");
        let plain = secret.open(SEAL_CONTEXT, &sealed).unwrap();
        let doc = RingDoc::decode(&plain).unwrap();
        assert_eq!(doc.generation, 4);
        let back = doc.ring().unwrap();
        assert_eq!(back.primary.value, ring.primary.value);
        assert_eq!(back.salt.version, 2);
        assert_eq!(back.requirements, ring.requirements);
        assert_eq!(back.retiring, ring.retiring);
        assert_eq!(back.previous, ring.previous);
        assert_eq!(back.revocations, ring.revocations);
        assert!(back.local_auth_disabled, "carried across the cluster");
        let err = RingDoc::decode(br#"{"generation":1,"primary":{"value":"SECRET-KEY""#)
            .err()
            .unwrap()
            .to_string();
        assert!(!err.contains("SECRET"), "{err}");
    }
}
