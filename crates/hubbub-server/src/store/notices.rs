//! Notices to operators: one row per notice and channel (unique, so nothing is queued twice),
//! with its delivery state, attempts and last error.

use super::audit::{self, AuditEntry};
use super::{Store, StoreError};
use crate::clock::UnixMillis;
use rusqlite::{params, TransactionBehavior};

/// A notice to queue.
#[derive(Debug, Clone)]
pub struct NewNotice {
    /// What makes it unique, e.g. `rotation_required:primary:v3`.
    pub dedup: String,
    pub kind: String,
    pub subject: String,
    pub body: String,
    /// JSON for webhooks.
    pub payload: String,
}

/// A stored notice.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    pub id: i64,
    pub channel: String,
    pub kind: String,
    pub subject: String,
    #[serde(skip)]
    pub body: String,
    #[serde(skip)]
    pub payload: String,
    #[serde(skip)]
    pub created_at: UnixMillis,
    pub status: String,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip)]
    pub sent_at: Option<UnixMillis>,
    /// What makes it unique (the same on every node and channel).
    #[serde(skip)]
    pub dedup: String,
}

const COLUMNS: &str =
    "id, channel, kind, subject, body, payload, created_at, status, attempts, last_error, sent_at, dedup";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Notice> {
    Ok(Notice {
        id: r.get(0)?,
        channel: r.get(1)?,
        kind: r.get(2)?,
        subject: r.get(3)?,
        body: r.get(4)?,
        payload: r.get(5)?,
        created_at: r.get(6)?,
        status: r.get(7)?,
        attempts: r.get::<_, i64>(8)? as u32,
        last_error: r.get(9)?,
        sent_at: r.get(10)?,
        dedup: r.get(11)?,
    })
}

impl Store {
    /// Queues a notice on each channel unless it was queued before. Returns how many were new.
    pub fn queue_notice(
        &self,
        notice: &NewNotice,
        channels: &[&str],
        now: UnixMillis,
    ) -> Result<usize, StoreError> {
        let conn = self.lock();
        let mut added = 0;
        for channel in channels {
            added += conn.execute(
                "INSERT OR IGNORE INTO notices (dedup, channel, kind, subject, body, payload, created_at, status, attempts, next_attempt_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', 0, ?7)",
                params![notice.dedup, channel, notice.kind, notice.subject, notice.body, notice.payload, now],
            )?;
        }
        Ok(added)
    }

    /// Pending notices whose next attempt is due.
    pub fn due_notices(&self, now: UnixMillis) -> Result<Vec<Notice>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM notices WHERE status = 'pending' AND next_attempt_at <= ?1 ORDER BY id LIMIT 50"
        ))?;
        let rows = stmt.query_map([now], row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn notices(&self) -> Result<Vec<Notice>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM notices ORDER BY id DESC LIMIT 200"
        ))?;
        let rows = stmt.query_map([], row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks a notice sent (and audits it), once.
    pub fn notice_sent(&self, notice: &Notice, now: UnixMillis) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changed = tx.execute(
            "UPDATE notices SET status = 'sent', attempts = attempts + 1, sent_at = ?2, last_error = NULL
             WHERE id = ?1 AND status = 'pending'",
            params![notice.id, now],
        )?;
        if changed > 0 {
            let detail = format!("{}: {}", notice.channel, notice.subject);
            audit::append(
                &tx,
                &AuditEntry {
                    at: now,
                    event: "notice_sent",
                    actor: "policy",
                    detail: Some(&detail),
                    ..AuditEntry::default()
                },
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records a failed attempt and when to try again; audits the first failure.
    pub fn notice_failed(
        &self,
        notice: &Notice,
        error: &str,
        retry_at: UnixMillis,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE notices SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3 WHERE id = ?1 AND status = 'pending'",
            params![notice.id, error, retry_at],
        )?;
        if notice.attempts == 0 {
            let detail = format!("{}: {} ({error}; retrying)", notice.channel, notice.subject);
            audit::append(
                &tx,
                &AuditEntry {
                    at: now,
                    event: "notice_failed",
                    actor: "policy",
                    detail: Some(&detail),
                    ..AuditEntry::default()
                },
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}
