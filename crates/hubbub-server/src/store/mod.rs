//! Durable state in the data directory: SQLite (WAL, synchronous commits) holding the keys, the
//! admin token and the history of key events, plus the admin token file.
//!
//! A key change is committed (and so fsynced) before the caller hears of it. A crash at any moment
//! leaves each slot with its old value or its new one: the change is one SQLite transaction.

mod audit;
mod files;
mod lifecycle;
mod notices;

pub use audit::{AuditEntry, AuditEvent, AuditRecord};
pub use lifecycle::{PreviousKey, RetiringKey, RotationRequirement, StaleCaller, UsageRecord};
pub use notices::{NewNotice, Notice};

use crate::clock::UnixMillis;
use crate::secret::Secret;
use hubbub_proto::keys::KeySlot;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

pub const DATABASE_FILE: &str = "hubbub.db";
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: keys, the instance's admin token, and the history of key events.
    "CREATE TABLE keys (
        slot       TEXT PRIMARY KEY CHECK (slot IN ('primary', 'secondary', 'salt')),
        value      TEXT NOT NULL CHECK (length(value) > 0),
        version    INTEGER NOT NULL CHECK (version >= 1),
        created_at INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE instance (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        admin_token TEXT NOT NULL CHECK (length(admin_token) > 0),
        created_at  INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE key_events (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        at          INTEGER NOT NULL,
        slot        TEXT NOT NULL,
        event       TEXT NOT NULL,
        old_version INTEGER,
        new_version INTEGER,
        actor       TEXT NOT NULL,
        source      TEXT
    ) STRICT;",
    // 2: per-hub settings (event handlers, anonymous policy), as JSON.
    "CREATE TABLE hub_settings (
        hub        TEXT PRIMARY KEY,
        settings   TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    ) STRICT;",
    // 3: the audit log (append-only, replacing key_events), key usage, rotation requirements,
    // and old key values kept for a grace period.
    "CREATE TABLE audit_log (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        at          INTEGER NOT NULL,
        event       TEXT NOT NULL,
        slot        TEXT,
        old_version INTEGER,
        new_version INTEGER,
        actor       TEXT NOT NULL,
        source      TEXT,
        detail      TEXT
    ) STRICT;
    INSERT INTO audit_log (at, event, slot, old_version, new_version, actor, source)
        SELECT at, event, slot, old_version, new_version, actor, source FROM key_events ORDER BY id;
    DROP TABLE key_events;
    CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TABLE usage_totals (
        slot               TEXT PRIMARY KEY,
        rest_requests      INTEGER NOT NULL,
        client_connections INTEGER NOT NULL,
        last_used_at       INTEGER
    ) STRICT;
    CREATE TABLE usage_minutes (
        slot               TEXT NOT NULL,
        minute             INTEGER NOT NULL,
        rest_requests      INTEGER NOT NULL,
        client_connections INTEGER NOT NULL,
        PRIMARY KEY (slot, minute)
    ) STRICT;
    CREATE TABLE rotation_requirements (
        slot        TEXT PRIMARY KEY,
        version     INTEGER NOT NULL,
        deadline    INTEGER NOT NULL,
        reason      TEXT NOT NULL,
        required_at INTEGER NOT NULL,
        actor       TEXT NOT NULL
    ) STRICT;
    CREATE TABLE retiring_keys (
        slot    TEXT NOT NULL,
        version INTEGER NOT NULL,
        value   TEXT NOT NULL,
        until   INTEGER NOT NULL,
        PRIMARY KEY (slot, version)
    ) STRICT;",
    // 4: notices to operators (email, webhook), each sent once, with its delivery outcome.
    "CREATE TABLE notices (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        dedup           TEXT NOT NULL,
        channel         TEXT NOT NULL,
        kind            TEXT NOT NULL,
        subject         TEXT NOT NULL,
        body            TEXT NOT NULL,
        payload         TEXT NOT NULL,
        created_at      INTEGER NOT NULL,
        status          TEXT NOT NULL,
        attempts        INTEGER NOT NULL,
        next_attempt_at INTEGER NOT NULL,
        last_error      TEXT,
        sent_at         INTEGER,
        UNIQUE (dedup, channel)
    ) STRICT;",
    // 5: cluster mode: how far each mirrored JetStream stream has been copied.
    "CREATE TABLE cluster_mirror (
        name TEXT PRIMARY KEY,
        seq  INTEGER NOT NULL
    ) STRICT;",
    // 6: earlier access-key values, kept to recognise (never accept) tokens they signed, the
    // callers seen with such tokens, and the uses of values in a grace period.
    "CREATE TABLE previous_keys (
        slot        TEXT NOT NULL,
        version     INTEGER NOT NULL,
        value       TEXT NOT NULL,
        replaced_at INTEGER NOT NULL,
        PRIMARY KEY (slot, version)
    ) STRICT;
    CREATE TABLE stale_callers (
        slot           TEXT NOT NULL,
        version        INTEGER NOT NULL,
        kind           TEXT NOT NULL,
        hub            TEXT NOT NULL,
        source_address TEXT NOT NULL,
        user_agent     TEXT NOT NULL,
        count          INTEGER NOT NULL,
        first_seen_at  INTEGER NOT NULL,
        last_seen_at   INTEGER NOT NULL,
        PRIMARY KEY (slot, version, kind, hub, source_address, user_agent)
    ) STRICT;
    ALTER TABLE usage_totals ADD COLUMN retiring_uses INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE usage_totals ADD COLUMN retiring_last_used_at INTEGER;
    CREATE TABLE rotation_policy (
        id     INTEGER PRIMARY KEY CHECK (id = 1),
        policy TEXT NOT NULL
    ) STRICT;",
    // 7: whether access keys authenticate (disableLocalAuth); no row: they do.
    "CREATE TABLE access_settings (
        id                  INTEGER PRIMARY KEY CHECK (id = 1),
        local_auth_disabled INTEGER NOT NULL CHECK (local_auth_disabled IN (0, 1))
    ) STRICT;",
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("the database {path} is damaged or is not a Hubbub database ({detail}); restore it from a backup or move it away to start a new instance with new keys")]
    Corrupt { path: PathBuf, detail: String },
    #[error("the database {path} was written by a newer Hubbub (schema version {found}; this build knows up to {known})")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: usize,
    },
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the operating system's random source failed: {0}")]
    Random(getrandom::Error),
    #[error("the database file {path} is accessible to other users (mode {mode}) and cannot be made private ({reason}); as its owner run `chmod 600 {path}`, or run Hubbub as the user that owns it")]
    Exposed {
        path: PathBuf,
        mode: String,
        reason: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One slot as stored.
#[derive(Debug, Clone)]
pub struct StoredSlot {
    pub value: Secret,
    pub version: u64,
    pub created_at: UnixMillis,
}

/// The three slots as stored.
#[derive(Debug, Clone)]
pub struct StoredKeys {
    pub primary: StoredSlot,
    pub secondary: StoredSlot,
    pub salt: StoredSlot,
}

/// What `load_or_init` found (or made).
#[derive(Debug)]
pub struct Instance {
    pub keys: StoredKeys,
    pub admin_token: Secret,
    /// True when this call generated the keys (first start).
    pub created: bool,
}

/// The whole key ring as stored: the three slots, the rotation requirements and the old values
/// still in a grace period.
#[derive(Debug, Clone)]
pub struct RingRows<'a> {
    pub slots: [(KeySlot, &'a StoredSlot); 3],
    pub requirements: &'a [RotationRequirement],
    pub retiring: &'a [RetiringKey],
    pub previous: &'a [PreviousKey],
    /// The rotation policy as JSON (the keys layer reads and writes it).
    pub policy: Option<String>,
    /// Access keys do not authenticate (`disableLocalAuth`).
    pub local_auth_disabled: bool,
}

/// The database handle. One connection behind a mutex: writes are rare (key changes) and must be
/// serialised anyway; the hot path reads keys from memory, never from here.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
    data_dir: PathBuf,
}

impl Store {
    /// Creates the data directory if missing, opens (or creates) the database (its files private,
    /// mode 0600) and migrates it.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        prepare_data_dir(data_dir)?;
        let path = data_dir.join(DATABASE_FILE);
        let existed = path.exists();
        files::make_private(&path)?;
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        let corrupt = |detail: String| StoreError::Corrupt {
            path: path.clone(),
            detail,
        };
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| corrupt(e.to_string()))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(corrupt(format!("journal mode is {mode}, not WAL")));
        }
        // FULL: every commit syncs the WAL, so an acknowledged key change survives power loss.
        conn.pragma_update(None, "synchronous", "FULL")?;
        if existed {
            let check: String = conn
                .query_row("PRAGMA quick_check", [], |r| r.get(0))
                .map_err(|e| corrupt(e.to_string()))?;
            if check != "ok" {
                return Err(corrupt(check));
            }
        }
        let store = Self {
            conn: Mutex::new(conn),
            path: path.clone(),
            data_dir: data_dir.to_path_buf(),
        };
        store.migrate()?;
        Ok(store)
    }

    /// Whether the database answers a query (a readiness check).
    pub fn ping(&self) -> Result<(), StoreError> {
        self.lock()
            .query_row("SELECT 1", [], |row| row.get::<_, i64>(0))?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A poisoned lock only means another thread panicked mid-call; SQLite rolled its
        // transaction back, so the connection is still consistent.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if current > MIGRATIONS.len() as i64 {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found: current,
                known: MIGRATIONS.len(),
            });
        }
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", index as i64 + 1)?;
            tx.commit()?;
            tracing::info!(version = index + 1, "applied database migration");
        }
        Ok(())
    }

    /// Loads the keys and admin token, generating them on the very first start.
    ///
    /// A database with no keys and no key history has never been initialised; one with some but
    /// not all slots, or history but no keys, is damaged and is refused rather than silently
    /// given new keys.
    pub fn load_or_init(&self, now: UnixMillis) -> Result<Instance, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let key_rows: i64 = tx.query_row("SELECT count(*) FROM keys", [], |r| r.get(0))?;
        let event_rows: i64 = tx.query_row("SELECT count(*) FROM audit_log", [], |r| r.get(0))?;
        let token: Option<String> = tx
            .query_row("SELECT admin_token FROM instance WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?;
        let created = key_rows == 0 && event_rows == 0 && token.is_none();
        if created {
            for slot in KeySlot::ALL {
                let value = Secret::generate().map_err(StoreError::Random)?;
                tx.execute(
                    "INSERT INTO keys (slot, value, version, created_at) VALUES (?1, ?2, 1, ?3)",
                    params![slot.as_str(), value.expose(), now],
                )?;
                audit::append(
                    &tx,
                    &AuditEntry {
                        at: now,
                        event: "generated",
                        slot: Some(slot),
                        new_version: Some(1),
                        actor: "hubbub",
                        ..AuditEntry::default()
                    },
                )?;
            }
            let admin_token = Secret::generate().map_err(StoreError::Random)?;
            tx.execute(
                "INSERT INTO instance (id, admin_token, created_at) VALUES (1, ?1, ?2)",
                params![admin_token.expose(), now],
            )?;
        }
        let keys = read_keys(&tx).map_err(|e| match e {
            StoreError::Sqlite(inner) => StoreError::Corrupt {
                path: self.path.clone(),
                detail: inner.to_string(),
            },
            other => other,
        })?;
        let keys = keys.ok_or_else(|| StoreError::Corrupt {
            path: self.path.clone(),
            detail: format!("{key_rows} of 3 key slots present"),
        })?;
        let admin_token: String = tx
            .query_row("SELECT admin_token FROM instance WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?
            .ok_or_else(|| StoreError::Corrupt {
                path: self.path.clone(),
                detail: "the admin token is missing".into(),
            })?;
        tx.commit()?;
        Ok(Instance {
            keys,
            admin_token: Secret::new(admin_token),
            created,
        })
    }

    /// Overwrites the keys, rotation requirements and retiring keys with `ring` and appends
    /// `events` to the audit log, in one durable transaction: a key change is on disk, with its
    /// record, before it takes effect. A ring another node changed comes with no events (they
    /// are recorded where the change was made), so a node restarted while the cluster is out of
    /// reach still has the last keys it saw.
    pub fn save_ring(
        &self,
        ring: &RingRows<'_>,
        events: &[AuditEntry<'_>],
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (slot, key) in ring.slots {
            tx.execute(
                "INSERT INTO keys (slot, value, version, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (slot) DO UPDATE SET value = excluded.value,
                     version = excluded.version, created_at = excluded.created_at",
                params![
                    slot.as_str(),
                    key.value.expose(),
                    key.version as i64,
                    key.created_at
                ],
            )?;
        }
        tx.execute("DELETE FROM rotation_requirements", [])?;
        for r in ring.requirements {
            tx.execute(
                "INSERT INTO rotation_requirements (slot, version, deadline, reason, required_at, actor)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![r.slot.as_str(), r.version as i64, r.deadline, r.reason, r.required_at, r.actor],
            )?;
        }
        tx.execute("DELETE FROM retiring_keys", [])?;
        for k in ring.retiring {
            tx.execute(
                "INSERT OR REPLACE INTO retiring_keys (slot, version, value, until) VALUES (?1, ?2, ?3, ?4)",
                params![k.slot.as_str(), k.version as i64, k.value.expose(), k.until],
            )?;
        }
        tx.execute("DELETE FROM previous_keys", [])?;
        for k in ring.previous {
            tx.execute(
                "INSERT OR REPLACE INTO previous_keys (slot, version, value, replaced_at) VALUES (?1, ?2, ?3, ?4)",
                params![k.slot.as_str(), k.version as i64, k.value.expose(), k.replaced_at],
            )?;
        }
        tx.execute("DELETE FROM rotation_policy", [])?;
        if let Some(policy) = &ring.policy {
            tx.execute(
                "INSERT INTO rotation_policy (id, policy) VALUES (1, ?1)",
                [policy],
            )?;
        }
        tx.execute(
            "INSERT OR REPLACE INTO access_settings (id, local_auth_disabled) VALUES (1, ?1)",
            [i64::from(ring.local_auth_disabled)],
        )?;
        for event in events {
            audit::append(&tx, event)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Whether access keys are turned off (`disableLocalAuth`).
    pub fn local_auth_disabled(&self) -> Result<bool, StoreError> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                "SELECT local_auth_disabled FROM access_settings WHERE id = 1",
                [],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .is_some_and(|v| v == 1))
    }

    /// The rotation policy's JSON, if one is set.
    pub fn rotation_policy(&self) -> Result<Option<String>, StoreError> {
        let conn = self.lock();
        Ok(conn
            .query_row("SELECT policy FROM rotation_policy WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Every hub's settings JSON.
    pub fn hub_settings(&self) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT hub, settings FROM hub_settings ORDER BY hub")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn put_hub_settings(
        &self,
        hub: &str,
        settings: &str,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO hub_settings (hub, settings, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (hub) DO UPDATE SET settings = excluded.settings, updated_at = excluded.updated_at",
            params![hub, settings, now],
        )?;
        Ok(())
    }

    pub fn delete_hub_settings(&self, hub: &str) -> Result<bool, StoreError> {
        Ok(self
            .lock()
            .execute("DELETE FROM hub_settings WHERE hub = ?1", [hub])?
            > 0)
    }

    /// Replaces the admin token with a fresh one, recording the event in the same durable
    /// transaction, then rewrites the admin token file. (A crash between the two leaves the file
    /// behind; the next start rewrites it from the database.) Returns the new token and the file.
    pub fn rotate_admin_token(
        &self,
        at: UnixMillis,
        actor: &str,
        source: Option<&str>,
    ) -> Result<(Secret, PathBuf), StoreError> {
        let token = Secret::generate().map_err(StoreError::Random)?;
        {
            let mut conn = self.lock();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "UPDATE instance SET admin_token = ?1 WHERE id = 1",
                [token.expose()],
            )?;
            audit::append(
                &tx,
                &AuditEntry {
                    at,
                    event: "admin_token_rotated",
                    actor,
                    source,
                    ..AuditEntry::default()
                },
            )?;
            tx.commit()?;
        }
        let file = self.ensure_admin_token_file(&token)?;
        Ok((token, file))
    }

    /// Writes the admin token file (mode 0600) if it is missing or differs from the stored token.
    /// Written to a temporary file, synced and renamed, so it is never seen half-written.
    pub fn ensure_admin_token_file(&self, token: &Secret) -> Result<PathBuf, StoreError> {
        let path = self.data_dir.join(ADMIN_TOKEN_FILE);
        if let Ok(existing) = std::fs::read_to_string(&path) {
            if token.matches(existing.trim()) {
                return Ok(path);
            }
            tracing::warn!(file = %path.display(), "admin token file did not match the stored token; rewriting it");
        }
        let file_error = |source| StoreError::File {
            path: path.clone(),
            source,
        };
        let tmp = self.data_dir.join(format!("{ADMIN_TOKEN_FILE}.tmp"));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp).map_err(file_error)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(file_error)?;
        }
        file.write_all(format!("{}\n", token.expose()).as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(file_error)?;
        std::fs::rename(&tmp, &path).map_err(file_error)?;
        sync_dir(&self.data_dir).map_err(file_error)?;
        Ok(path)
    }
}

fn read_keys(conn: &Connection) -> Result<Option<StoredKeys>, StoreError> {
    let read = |slot: KeySlot| -> Result<Option<StoredSlot>, StoreError> {
        Ok(conn
            .query_row(
                "SELECT value, version, created_at FROM keys WHERE slot = ?1",
                [slot.as_str()],
                |r| {
                    Ok(StoredSlot {
                        value: Secret::new(r.get(0)?),
                        version: r.get::<_, i64>(1)? as u64,
                        created_at: r.get(2)?,
                    })
                },
            )
            .optional()?)
    };
    Ok(
        match (
            read(KeySlot::Primary)?,
            read(KeySlot::Secondary)?,
            read(KeySlot::Salt)?,
        ) {
            (Some(primary), Some(secondary), Some(salt)) => Some(StoredKeys {
                primary,
                secondary,
                salt,
            }),
            _ => None,
        },
    )
}

/// Creates the directory (0700: it holds secrets) and proves it can be written.
fn prepare_data_dir(dir: &Path) -> Result<(), StoreError> {
    let err = |source| StoreError::DataDir {
        path: dir.to_path_buf(),
        source,
    };
    if !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(dir).map_err(err)?;
    }
    if !dir.is_dir() {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            "it is not a directory",
        )));
    }
    let probe = dir.join(".write-probe");
    std::fs::write(&probe, b"ok")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(err)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests;
