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
                "INSERT OR REPLACE INTO usage_totals (slot, rest_requests, client_connections, last_used_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![slot.as_str(), record.rest_requests as i64, record.client_connections as i64, record.last_used_at],
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
                "SELECT rest_requests, client_connections, last_used_at FROM usage_totals WHERE slot = ?1",
                [slot.as_str()],
                |r| {
                    Ok(UsageRecord {
                        rest_requests: r.get::<_, i64>(0)? as u64,
                        client_connections: r.get::<_, i64>(1)? as u64,
                        last_used_at: r.get(2)?,
                        minutes: Vec::new(),
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
}
