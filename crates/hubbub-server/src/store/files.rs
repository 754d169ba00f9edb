//! The database's files hold the keys and the admin token, so they are private: created 0600
//! whatever the umask, and an existing one that other users can access is made private at start
//! (or the start stops, naming the file and the command that fixes it).

use super::StoreError;
use std::path::{Path, PathBuf};

/// The database and the files SQLite keeps beside it in WAL mode.
pub(super) fn database_files(db: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [db.to_path_buf(), with("-wal"), with("-shm")]
}

/// Before SQLite opens the database: creates it (empty, which SQLite takes as a new database)
/// with mode 0600 if it is missing, and makes the existing database, `-wal` and `-shm` files
/// private. SQLite creates `-wal` and `-shm` with the database file's mode.
#[cfg(unix)]
pub(super) fn make_private(db: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let private = || std::fs::Permissions::from_mode(0o600);
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(db);
    match created {
        // The umask may have taken bits from the mode given at creation: set it exactly.
        Ok(file) => file
            .set_permissions(private())
            .map_err(|source| StoreError::File {
                path: db.to_path_buf(),
                source,
            })?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(StoreError::File {
                path: db.to_path_buf(),
                source,
            })
        }
    }
    let mut tightened = Vec::new();
    for path in database_files(db) {
        let mode = match std::fs::metadata(&path) {
            Ok(metadata) => metadata.permissions().mode() & 0o777,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(StoreError::File { path, source }),
        };
        if mode & 0o077 == 0 {
            continue;
        }
        if let Err(reason) = std::fs::set_permissions(&path, private()) {
            return Err(StoreError::Exposed {
                path,
                mode: format!("{mode:o}"),
                reason,
            });
        }
        tightened.push(format!("{} (was {mode:o})", path.display()));
    }
    if !tightened.is_empty() {
        tracing::warn!(
            files = %tightened.join(", "),
            "database files holding the keys were accessible to other users; made them private (0600)"
        );
    }
    Ok(())
}

/// Without Unix permissions the data directory's access control is all there is.
#[cfg(not(unix))]
pub(super) fn make_private(_db: &Path) -> Result<(), StoreError> {
    Ok(())
}
