//! The audit log: every key event with time, actor and source; append-only (triggers refuse
//! updates and deletes).

use super::{Store, StoreError};
use crate::clock::UnixMillis;
use hubbub_proto::keys::KeySlot;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

/// An event to record. Never carries key material.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuditEntry<'a> {
    pub at: UnixMillis,
    pub event: &'a str,
    pub slot: Option<KeySlot>,
    pub old_version: Option<u64>,
    pub new_version: Option<u64>,
    pub actor: &'a str,
    pub source: Option<&'a str>,
    pub detail: Option<&'a str>,
}

/// An event to record, owning its text; `dedup` names the fact it records, so that where
/// several nodes see the same fact it is recorded once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditEvent {
    pub at: UnixMillis,
    pub event: &'static str,
    pub slot: Option<KeySlot>,
    pub old_version: Option<u64>,
    pub new_version: Option<u64>,
    pub actor: String,
    pub source: Option<String>,
    pub detail: Option<String>,
    pub dedup: Option<String>,
}

impl AuditEvent {
    pub fn entry(&self) -> AuditEntry<'_> {
        AuditEntry {
            at: self.at,
            event: self.event,
            slot: self.slot,
            old_version: self.old_version,
            new_version: self.new_version,
            actor: &self.actor,
            source: self.source.as_deref(),
            detail: self.detail.as_deref(),
        }
    }
}

/// A recorded event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub id: i64,
    #[serde(skip)]
    pub at: UnixMillis,
    pub event: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_version: Option<u64>,
    pub actor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

pub(super) fn append(conn: &Connection, entry: &AuditEntry<'_>) -> rusqlite::Result<usize> {
    conn.execute(
        "INSERT INTO audit_log (at, event, slot, old_version, new_version, actor, source, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            entry.at,
            entry.event,
            entry.slot.map(KeySlot::as_str),
            entry.old_version.map(|v| v as i64),
            entry.new_version.map(|v| v as i64),
            entry.actor,
            entry.source,
            entry.detail,
        ],
    )
}

impl Store {
    /// Records one event (synchronously committed).
    pub fn append_audit(&self, entry: &AuditEntry<'_>) -> Result<(), StoreError> {
        append(&self.lock(), entry)?;
        Ok(())
    }

    /// The generation of the cluster key ring this node installed last (0: none yet). Kept so
    /// that a restarted node still refuses an older ring replayed into NATS.
    pub fn ring_generation(&self) -> Result<u64, StoreError> {
        let conn = self.lock();
        let generation: Option<i64> = conn
            .query_row(
                "SELECT seq FROM cluster_mirror WHERE name = 'ring_generation'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        Ok(generation.unwrap_or(0).max(0) as u64)
    }

    /// Records the generation of the cluster key ring just installed.
    pub fn set_ring_generation(&self, generation: u64) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO cluster_mirror (name, seq) VALUES ('ring_generation', ?1)
             ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
            [i64::try_from(generation).unwrap_or(i64::MAX)],
        )?;
        Ok(())
    }

    /// How far the audit stream created at `stream_created` was copied. A stream other than the
    /// one copied so far (created anew after JetStream lost it) is copied from its start.
    pub fn audit_mirror_position(&self, stream_created: i64) -> Result<u64, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let known: Option<i64> = tx
            .query_row(
                "SELECT seq FROM cluster_mirror WHERE name = 'audit_stream'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        if known != Some(stream_created) {
            tx.execute("DELETE FROM cluster_mirror WHERE name = 'audit'", [])?;
            tx.execute(
                "INSERT INTO cluster_mirror (name, seq) VALUES ('audit_stream', ?1)
                 ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
                [stream_created],
            )?;
        }
        let seq: Option<i64> = tx
            .query_row(
                "SELECT seq FROM cluster_mirror WHERE name = 'audit'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        tx.commit()?;
        Ok(seq.unwrap_or(0).max(0) as u64)
    }

    /// Copies event `seq` of the cluster's audit stream, once: an event at or below the last
    /// copied sequence is skipped. The event and the sequence are written in one transaction.
    pub fn mirror_audit(&self, entry: &AuditEntry<'_>, seq: u64) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let last: i64 = tx
            .query_row(
                "SELECT seq FROM cluster_mirror WHERE name = 'audit'",
                [],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        if seq as i64 <= last {
            return Ok(());
        }
        append(&tx, entry)?;
        tx.execute(
            "INSERT INTO cluster_mirror (name, seq) VALUES ('audit', ?1)
             ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
            [seq as i64],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Whether an event for this slot and key version was recorded.
    pub fn audit_contains(
        &self,
        event: &str,
        slot: KeySlot,
        version: u64,
    ) -> Result<bool, StoreError> {
        let found: i64 = self.lock().query_row(
            "SELECT count(*) FROM audit_log WHERE event = ?1 AND slot = ?2 AND old_version = ?3",
            params![event, slot.as_str(), version as i64],
            |r| r.get(0),
        )?;
        Ok(found > 0)
    }

    /// Events oldest first: at or after `since`, with an id above `after_id`, at most `limit`.
    /// The id of the latest audit event (0 when the log is empty).
    pub fn audit_last_id(&self) -> Result<i64, StoreError> {
        let conn = self.lock();
        Ok(
            conn.query_row("SELECT COALESCE(MAX(id), 0) FROM audit_log", [], |r| {
                r.get(0)
            })?,
        )
    }

    pub fn audit(
        &self,
        since: Option<UnixMillis>,
        after_id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT id, at, event, slot, old_version, new_version, actor, source, detail FROM audit_log
             WHERE at >= ?1 AND id > ?2 ORDER BY id LIMIT ?3",
        )?;
        let rows = stmt.query_map(
            params![
                since.unwrap_or(i64::MIN),
                after_id.unwrap_or(0),
                limit as i64
            ],
            |r| {
                Ok(AuditRecord {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    event: r.get(2)?,
                    slot: r.get(3)?,
                    old_version: r.get::<_, Option<i64>>(4)?.map(|v| v as u64),
                    new_version: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
                    actor: r.get(6)?,
                    source: r.get(7)?,
                    detail: r.get(8)?,
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
