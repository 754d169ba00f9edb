//! The store: first start, reopening, refusing damaged or newer databases, saving the ring with
//! its events, hub settings, the admin token file, the audit mirror.

use super::*;

#[test]
fn first_open_generates_and_later_opens_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let first = Store::open(dir.path())
        .unwrap()
        .load_or_init(1_000)
        .unwrap();
    assert!(first.created);
    assert_eq!(first.keys.primary.version, 1);
    assert_ne!(first.keys.primary.value, first.keys.secondary.value);
    let second = Store::open(dir.path())
        .unwrap()
        .load_or_init(2_000)
        .unwrap();
    assert!(!second.created);
    assert_eq!(second.keys.primary.value, first.keys.primary.value);
    assert_eq!(second.keys.salt.value, first.keys.salt.value);
    assert_eq!(second.admin_token, first.admin_token);
}

#[test]
fn saving_a_ring_writes_the_keys_and_their_events_in_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let before = store.load_or_init(1_000).unwrap().keys;
    let new = StoredSlot {
        value: Secret::generate().unwrap(),
        version: 2,
        created_at: 5_000,
    };
    let rows = RingRows {
        slots: [
            (KeySlot::Primary, &before.primary),
            (KeySlot::Secondary, &new),
            (KeySlot::Salt, &before.salt),
        ],
        requirements: &[],
        retiring: &[],
        previous: &[],
        policy: None,
        local_auth_disabled: false,
    };
    let event = AuditEntry {
        at: 5_000,
        event: "regenerated",
        slot: Some(KeySlot::Secondary),
        old_version: Some(1),
        new_version: Some(2),
        actor: "admin",
        source: Some("127.0.0.1"),
        detail: None,
    };
    store.save_ring(&rows, &[event]).unwrap();
    let after = store.load_or_init(6_000).unwrap();
    assert_eq!(after.keys.secondary.value, new.value);
    assert_eq!(after.keys.secondary.created_at, 5_000);
    assert_eq!(after.keys.primary.value, before.primary.value);
    let events = store.audit(None, None, 100).unwrap();
    let last = events.last().unwrap();
    assert_eq!(
        (
            last.slot.as_deref(),
            last.event.as_str(),
            last.old_version,
            last.new_version
        ),
        (Some("secondary"), "regenerated", Some(1), Some(2))
    );
    assert_eq!(last.source.as_deref(), Some("127.0.0.1"));
}

#[test]
fn the_cluster_audit_stream_is_copied_once_and_from_the_start_of_a_new_stream() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.load_or_init(1).unwrap();
    let entry = |event| AuditEntry {
        at: 5,
        event,
        actor: "admin-token",
        ..AuditEntry::default()
    };
    let count = |event: &str| {
        store
            .audit(None, None, 100)
            .unwrap()
            .iter()
            .filter(|r| r.event == event)
            .count()
    };
    assert_eq!(store.audit_mirror_position(111).unwrap(), 0);
    store.mirror_audit(&entry("one"), 1).unwrap();
    store.mirror_audit(&entry("two"), 2).unwrap();
    store.mirror_audit(&entry("one"), 1).unwrap();
    assert_eq!((count("one"), count("two")), (1, 1), "copied once");
    assert_eq!(store.audit_mirror_position(111).unwrap(), 2);
    // The stream was created anew: its sequence 1 is a new event.
    assert_eq!(store.audit_mirror_position(222).unwrap(), 0);
    store.mirror_audit(&entry("one"), 1).unwrap();
    assert_eq!(count("one"), 2);
}

#[test]
fn a_database_missing_a_slot_is_refused_not_regenerated() {
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path()).unwrap().load_or_init(1).unwrap();
    {
        let conn = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
        conn.execute("DELETE FROM keys WHERE slot = 'secondary'", [])
            .unwrap();
    }
    let err = Store::open(dir.path())
        .unwrap()
        .load_or_init(2)
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("2 of 3 key slots"), "{err}");
}

#[test]
fn the_audit_log_is_append_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.load_or_init(1).unwrap();
    let conn = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
    let update = conn.execute("UPDATE audit_log SET actor = 'someone else'", []);
    assert!(update.unwrap_err().to_string().contains("append-only"));
    let delete = conn.execute("DELETE FROM audit_log", []);
    assert!(delete.unwrap_err().to_string().contains("append-only"));
    assert_eq!(
        store.audit(None, None, 100).unwrap().len(),
        3,
        "the generated events are still there"
    );
}

#[test]
fn a_file_that_is_not_sqlite_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(DATABASE_FILE), vec![0x42; 8192]).unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path()).unwrap();
    {
        let conn = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
}

#[test]
fn a_data_dir_that_is_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = Store::open(&file).unwrap_err();
    assert!(matches!(err, StoreError::DataDir { .. }), "{err}");
}

#[cfg(unix)]
#[test]
fn admin_token_file_is_private_and_rewritten_when_missing() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let instance = store.load_or_init(1).unwrap();
    let path = store
        .ensure_admin_token_file(&instance.admin_token)
        .unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap().trim(),
        instance.admin_token.expose()
    );
    std::fs::remove_file(&path).unwrap();
    store
        .ensure_admin_token_file(&instance.admin_token)
        .unwrap();
    assert!(path.exists());
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// In a data directory anyone may list (0755), the database and the -wal and -shm files SQLite
/// makes beside it are private, whatever the umask.
#[cfg(unix)]
#[test]
fn the_database_and_its_wal_and_shm_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = Store::open(&data).unwrap();
    store.load_or_init(1_000).unwrap();
    store.put_hub_settings("chat", "{}", 2_000).unwrap();
    // Still open: the WAL and the shared-memory index exist now.
    for path in files::database_files(store.path()) {
        assert!(path.exists(), "{}", path.display());
        assert_eq!(format!("{:o}", mode(&path)), "600", "{}", path.display());
    }
}

/// The same under a umask that takes nothing away and one that takes everything from others:
/// the test above, run again in a process of its own with each.
#[cfg(unix)]
#[test]
fn the_database_files_are_private_under_any_umask() {
    let exe = std::env::current_exe().unwrap();
    for umask in ["000", "077"] {
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "umask {umask} && exec \"$0\" --exact \
                 store::tests::the_database_and_its_wal_and_shm_are_private"
            ))
            .arg(&exe)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "under umask {umask}: {text}");
        assert!(text.contains("1 passed"), "under umask {umask}: {text}");
    }
}

/// A database left readable by others (an older version, a restore, a copy) is made private at
/// the next start, -wal and -shm included.
#[cfg(unix)]
#[test]
fn an_existing_database_readable_by_others_is_made_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let first = Store::open(dir.path()).unwrap();
    let keys = first.load_or_init(1_000).unwrap().keys;
    // Kept open so that its -wal and -shm stay, as after a crash.
    let files = files::database_files(first.path());
    for path in &files {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let again = Store::open(dir.path()).unwrap();
    for path in &files {
        assert_eq!(format!("{:o}", mode(path)), "600", "{}", path.display());
    }
    assert_eq!(
        again.load_or_init(2_000).unwrap().keys.primary.value,
        keys.primary.value
    );
}
