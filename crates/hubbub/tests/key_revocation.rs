//! Revoking for real, through the real binary: a key kept by a grace period dies with the next
//! regeneration, `key end-grace` and a rotation deadline; the admin token rotates.

mod common;

use common::{rest_send, stdout_json, Hubbub};

/// The current primary and secondary keys, from `key show`.
fn current_keys(server: &Hubbub) -> (String, String) {
    let keys = stdout_json(&server.cli(&["key", "show"]));
    let field = |name: &str| keys[name].as_str().unwrap().to_string();
    (field("primaryKey"), field("secondaryKey"))
}

#[test]
fn regenerating_without_grace_end_grace_and_deadlines_revoke_keys_kept_by_a_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let server = Hubbub::start(dir.path());
    let (leaked, secondary) = current_keys(&server);
    let regenerate = |args: &[&str]| {
        let mut all = vec!["key", "regenerate", "--yes"];
        all.extend_from_slice(args);
        let out = server.cli(&all);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };

    // A leak: regenerated with a week's grace, then again without. The leaked key is dead now.
    regenerate(&["--key-type", "primary", "--grace", "7d"]);
    assert_eq!(rest_send(&server, &leaked), 202, "kept by the grace period");
    let (graced, _) = current_keys(&server);
    regenerate(&["--key-type", "primary"]);
    let (primary, _) = current_keys(&server);
    assert_eq!(
        rest_send(&server, &leaked),
        401,
        "revoked by the second regeneration"
    );
    assert_eq!(rest_send(&server, &graced), 401);
    assert_eq!(rest_send(&server, &primary), 202);

    // Ending a grace period early, for one key only.
    regenerate(&["--key-type", "secondary", "--grace", "1d"]);
    assert_eq!(rest_send(&server, &secondary), 202);
    let ended = server.cli(&["key", "end-grace", "--key-type", "secondary"]);
    assert!(
        ended.status.success(),
        "{}",
        String::from_utf8_lossy(&ended.stderr)
    );
    assert!(String::from_utf8_lossy(&ended.stderr).contains("Ended the grace period of 1"));
    assert_eq!(
        stdout_json(&ended).as_object().unwrap().len(),
        4,
        "the az shape on stdout"
    );
    assert_eq!(rest_send(&server, &secondary), 401);
    assert_eq!(
        rest_send(&server, &primary),
        202,
        "the other key is untouched"
    );
    let again = server.cli(&["key", "end-grace", "--key-type", "secondary"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("No earlier value"));

    // A rotation deadline ends the grace of the key's earlier values too.
    let (_, before) = current_keys(&server);
    regenerate(&["--key-type", "secondary", "--grace", "7d"]);
    assert_eq!(rest_send(&server, &before), 202, "in its week of grace");
    let required = server.cli(&[
        "key",
        "require-rotation",
        "--key-type",
        "secondary",
        "--by",
        "2s",
        "--reason",
        "leaked",
    ]);
    assert!(
        required.status.success(),
        "{}",
        String::from_utf8_lossy(&required.stderr)
    );
    assert_eq!(
        rest_send(&server, &before),
        202,
        "the deadline is not here yet"
    );
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(
        rest_send(&server, &before),
        401,
        "the deadline ended its grace"
    );
    assert_eq!(rest_send(&server, &primary), 202);

    // Every ending is in the audit log, with why.
    let audit = server.cli(&["audit", "--json"]);
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&audit.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let details: Vec<String> = events
        .iter()
        .filter(|e| e["event"] == "grace_ended")
        .map(|e| e["detail"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        details.iter().any(|d| d.contains("without a grace period"))
            && details.iter().any(|d| d == "ended early"),
        "{details:?}"
    );
}

#[test]
fn the_admin_token_rotates_and_the_old_one_stops_working() {
    let dir = tempfile::tempdir().unwrap();
    let server = Hubbub::start(dir.path());
    let token_file = dir.path().join("admin-token");
    let old = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    let rotated = server.cli(&["admin-token", "rotate"]);
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    let printed = stdout_json(&rotated);
    assert!(
        printed.get("adminToken").is_none(),
        "not printed without --print: {printed}"
    );
    let new = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    assert_ne!(new, old);
    assert!(!String::from_utf8_lossy(&rotated.stdout).contains(&new));
    // The old token is refused, the new one (read from the file) works.
    let with_old = common::cli(
        &["key", "show", "--admin-token", &old],
        &server.admin_url(),
        dir.path(),
    );
    assert!(!with_old.status.success());
    assert!(String::from_utf8_lossy(&with_old.stderr).contains("refused the admin token"));
    assert!(server.cli(&["key", "show"]).status.success());
    // Recorded, with who and from where, never the token.
    let audit = server.cli(&["audit", "--json"]);
    let text = String::from_utf8_lossy(&audit.stdout);
    assert!(text.contains("admin_token_rotated"), "{text}");
    assert!(!text.contains(&new) && !text.contains(&old));
    // It survives a restart.
    let status = server.terminate();
    assert!(status.success());
    let again = Hubbub::start(dir.path());
    assert!(again.cli(&["key", "show"]).status.success());
    let stale = common::cli(
        &["key", "show", "--admin-token", &old],
        &again.admin_url(),
        dir.path(),
    );
    assert!(!stale.status.success());
}
