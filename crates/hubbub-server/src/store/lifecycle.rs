//! Key lifecycle state: usage counters (totals and the last hour by minute), rotation
//! requirements with deadlines, and old key values still accepted during a grace period.

use super::{Store, StoreError};
use crate::clock::UnixMillis;
use hubbub_proto::keys::KeySlot;
use rusqlite::{params, OptionalExtension, TransactionBehavior};

/// One slot's usage as stored: totals, last use, and per-minute counts of the last hour.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UsageRecord {
    pub rest_requests: u64,
    pub client_connections: u64,
    pub last_used_at: Option<UnixMillis>,
    /// (minute since the epoch, REST requests, client connections)
    pub minutes: Vec<(i64, u64, u64)>,
    /// Uses of an earlier value in its grace period, and the last one.
    #[serde(default)]
    pub retiring_uses: u64,
    #[serde(default)]
    pub retiring_last_used_at: Option<UnixMillis>,
}

/// A demand that a key be rotated by a deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationRequirement {
    pub slot: KeySlot,
    /// The key version the requirement applies to.
    pub version: u64,
    pub deadline: UnixMillis,
    pub reason: String,
    pub required_at: UnixMillis,
    pub actor: String,
}

/// An old key value accepted for verification until `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetiringKey {
    pub slot: KeySlot,
    pub version: u64,
    pub value: crate::secret::Secret,
    pub until: UnixMillis,
}

/// An earlier access-key value, kept after `replaced_at` only to recognise a token it signed
/// (which is refused, and its caller recorded as stale); never accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousKey {
    pub slot: KeySlot,
    pub version: u64,
    pub value: crate::secret::Secret,
    pub replaced_at: UnixMillis,
}

/// A caller seen with a token signed by an earlier key value: one row per key version, kind
/// (`rest` or `connection`), hub, source address and user agent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StaleCaller {
    pub slot: KeySlot,
    pub version: u64,
    pub kind: String,
    pub hub: String,
    pub source_address: String,
    pub user_agent: String,
    pub count: u64,
    pub first_seen_at: UnixMillis,
    pub last_seen_at: UnixMillis,
}

fn slot_of(name: String) -> rusqlite::Result<KeySlot> {
    name.parse()
        .map_err(|e: hubbub_proto::keys::UnknownKeySlot| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })
}

impl Store {
    /// Replaces the stored usage of the access slots (one transaction).
    pub fn save_usage(
        &self,
        usage: &[(KeySlot, UsageRecord)],
        oldest_minute: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (slot, record) in usage {
            tx.execute(
                "INSERT OR REPLACE INTO usage_totals (slot, rest_requests, client_connections, last_used_at, retiring_uses, retiring_last_used_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    slot.as_str(),
                    record.rest_requests as i64,
                    record.client_connections as i64,
                    record.last_used_at,
                    record.retiring_uses as i64,
                    record.retiring_last_used_at
                ],
            )?;
            tx.execute("DELETE FROM usage_minutes WHERE slot = ?1", [slot.as_str()])?;
            for (minute, rest, connections) in record
                .minutes
                .iter()
                .filter(|(m, _, _)| *m >= oldest_minute)
            {
                tx.execute(
                    "INSERT INTO usage_minutes (slot, minute, rest_requests, client_connections) VALUES (?1, ?2, ?3, ?4)",
                    params![slot.as_str(), minute, *rest as i64, *connections as i64],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn load_usage(&self, slot: KeySlot) -> Result<UsageRecord, StoreError> {
        let conn = self.lock();
        let mut record = conn
            .query_row(
                "SELECT rest_requests, client_connections, last_used_at, retiring_uses, retiring_last_used_at
                 FROM usage_totals WHERE slot = ?1",
                [slot.as_str()],
                |r| {
                    Ok(UsageRecord {
                        rest_requests: r.get::<_, i64>(0)? as u64,
                        client_connections: r.get::<_, i64>(1)? as u64,
                        last_used_at: r.get(2)?,
                        minutes: Vec::new(),
                        retiring_uses: r.get::<_, i64>(3)? as u64,
                        retiring_last_used_at: r.get(4)?,
                    })
                },
            )
            .optional()?
            .unwrap_or_default();
        let mut stmt = conn.prepare("SELECT minute, rest_requests, client_connections FROM usage_minutes WHERE slot = ?1 ORDER BY minute")?;
        record.minutes = stmt
            .query_map([slot.as_str()], |r| {
                Ok((
                    r.get(0)?,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                ))
            })?
            .collect::<Result<_, _>>()?;
        Ok(record)
    }

    pub fn rotation_requirements(&self) -> Result<Vec<RotationRequirement>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT slot, version, deadline, reason, required_at, actor FROM rotation_requirements",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(RotationRequirement {
                slot: slot_of(r.get(0)?)?,
                version: r.get::<_, i64>(1)? as u64,
                deadline: r.get(2)?,
                reason: r.get(3)?,
                required_at: r.get(4)?,
                actor: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn retiring_keys(&self) -> Result<Vec<RetiringKey>, StoreError> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare("SELECT slot, version, value, until FROM retiring_keys ORDER BY until")?;
        let rows = stmt.query_map([], |r| {
            Ok(RetiringKey {
                slot: slot_of(r.get(0)?)?,
                version: r.get::<_, i64>(1)? as u64,
                value: crate::secret::Secret::new(r.get(2)?),
                until: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Earlier access-key values still recognised, oldest first.
    pub fn previous_keys(&self) -> Result<Vec<PreviousKey>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT slot, version, value, replaced_at FROM previous_keys ORDER BY replaced_at",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(PreviousKey {
                slot: slot_of(r.get(0)?)?,
                version: r.get::<_, i64>(1)? as u64,
                value: crate::secret::Secret::new(r.get(2)?),
                replaced_at: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The stale callers kept, most recently seen first.
    pub fn stale_callers(&self) -> Result<Vec<StaleCaller>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT slot, version, kind, hub, source_address, user_agent, count, first_seen_at, last_seen_at
             FROM stale_callers ORDER BY last_seen_at DESC",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(StaleCaller {
                slot: slot_of(r.get(0)?)?,
                version: r.get::<_, i64>(1)? as u64,
                kind: r.get(2)?,
                hub: r.get(3)?,
                source_address: r.get(4)?,
                user_agent: r.get(5)?,
                count: r.get::<_, i64>(6)? as u64,
                first_seen_at: r.get(7)?,
                last_seen_at: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Replaces the stored stale callers with `callers` (already bounded by the caller).
    pub fn save_stale_callers(&self, callers: &[StaleCaller]) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM stale_callers", [])?;
        for c in callers {
            tx.execute(
                "INSERT OR REPLACE INTO stale_callers (slot, version, kind, hub, source_address, user_agent, count, first_seen_at, last_seen_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    c.slot.as_str(),
                    c.version as i64,
                    c.kind,
                    c.hub,
                    c.source_address,
                    c.user_agent,
                    i64::try_from(c.count).unwrap_or(i64::MAX),
                    c.first_seen_at,
                    c.last_seen_at
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}
