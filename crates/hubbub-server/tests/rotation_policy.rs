//! Rotation policies: the active connection string in a file sink at once and after every step;
//! a step makes the standby key active and keeps the previous one valid until the next step; a
//! value two steps back is refused; due steps run by themselves and wait while the standby key
//! is in use (`onlyIfIdle`); bad policies are refused with nothing changed.

mod common;

use common::{eventually, TestServer};
use hubbub_proto::keys::KeySlot;
use hubbub_server::Settings;
use serde_json::json;
use std::time::Duration;

fn sink_settings(dir: &std::path::Path) -> Settings {
    Settings {
        sink_dirs: Some(vec![dir.to_path_buf()]),
        maintenance_interval_ms: Some(50),
        ..Default::default()
    }
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .trim_end()
        .to_string()
}

fn connection_string(t: &TestServer, slot: KeySlot) -> String {
    format!(
        "Endpoint={};AccessKey={};Version=1.0;",
        t.endpoint(),
        t.key(slot)
    )
}

#[tokio::test]
async fn steps_alternate_the_keys_and_the_sink_always_holds_a_working_one() {
    let sinks = tempfile::tempdir().unwrap();
    let file = sinks.path().join("app").join("connection-string");
    let t = TestServer::start_with(sink_settings(sinks.path())).await;
    let original_primary = t.key(KeySlot::Primary);

    let response = t
        .http
        .put(t.admin_url("/admin/keys/policy"))
        .bearer_auth(t.admin_token())
        .json(&json!({"every": "30d", "sinks": [{"kind": "file", "path": file}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let policy: serde_json::Value = response.json().await.unwrap();
    assert_eq!(policy["activeKeyType"], "primary", "{policy}");
    assert_eq!(policy["inStep"], true, "{policy}");
    assert_eq!(read(&file), connection_string(&t, KeySlot::Primary));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    // Step 1: the secondary gets a new value and becomes active; the primary stays valid.
    let step = t.admin_post("/admin/keys/rotate", json!({})).await;
    assert_eq!(step.status(), 200);
    let policy: serde_json::Value = step.json().await.unwrap();
    assert_eq!(policy["activeKeyType"], "secondary", "{policy}");
    assert_eq!(policy["lastOutcome"]["result"], "rotated", "{policy}");
    assert_eq!(read(&file), connection_string(&t, KeySlot::Secondary));
    let step_one_secondary = t.key(KeySlot::Secondary);
    assert_eq!(t.send_with_key(&original_primary).await, 202, "still valid");
    assert_eq!(t.send_with_key(&step_one_secondary).await, 202);

    // Step 2: the primary gets a new value; the original primary, two steps back, is gone.
    let step = t.admin_post("/admin/keys/rotate", json!({})).await;
    assert_eq!(step.status(), 200);
    assert_eq!(read(&file), connection_string(&t, KeySlot::Primary));
    assert_eq!(t.send_with_key(&original_primary).await, 401);
    assert_eq!(t.send_with_key(&step_one_secondary).await, 202);

    // A due step runs by itself.
    t.clock.advance_secs(31 * 24 * 3600);
    assert!(
        eventually(Duration::from_secs(10), || async {
            read(&file) == connection_string(&t, KeySlot::Secondary)
                && t.admin_json("/admin/keys/policy").await["activeKeyType"] == "secondary"
        })
        .await,
        "the housekeeper took the due step and wrote the sink"
    );
    let audit = t.admin_json("/admin/audit?limit=100").await;
    let steps = audit["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "rotation_step")
        .count();
    assert_eq!(steps, 3, "{audit}");
}

#[tokio::test]
async fn a_due_step_waits_while_the_standby_key_is_in_use() {
    let sinks = tempfile::tempdir().unwrap();
    // Notices go to a webhook nobody answers: they are queued (and retried) all the same.
    let t = TestServer::start_with(Settings {
        notifications: Some(hubbub_server::keys::notices::NotificationSettings {
            webhook_url: Some("http://127.0.0.1:9/hooks".into()),
            webhook_secret: Some("a-webhook-secret-of-some-length".into()),
            ..Default::default()
        }),
        ..sink_settings(sinks.path())
    })
    .await;
    let response = t
        .http
        .put(t.admin_url("/admin/keys/policy"))
        .bearer_auth(t.admin_token())
        .json(&json!({"every": "10s", "onlyIfIdle": "15m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // An app still on the standby (secondary) key.
    let secondary = t.key(KeySlot::Secondary);
    assert_eq!(t.send_with_key(&secondary).await, 202);
    t.clock.advance_secs(11);
    assert!(
        eventually(Duration::from_secs(10), || async {
            t.admin_json("/admin/keys/policy").await["lastOutcome"]["result"] == "postponed"
        })
        .await
    );
    let policy = t.admin_json("/admin/keys/policy").await;
    assert_eq!(policy["activeKeyType"], "primary");
    assert!(
        policy["lastOutcome"]["detail"]
            .as_str()
            .unwrap()
            .contains("secondary key (standby) was used 1 time"),
        "{policy}"
    );
    assert_eq!(t.key(KeySlot::Secondary), secondary, "not regenerated");
    assert!(
        eventually(Duration::from_secs(10), || async {
            t.admin_json("/admin/notices")
                .await
                .to_string()
                .contains("rotation_postponed")
        })
        .await,
        "a notice says the step was postponed"
    );
    // Once nothing used it for the window, the step happens.
    t.clock.advance_secs(20 * 60);
    assert!(
        eventually(Duration::from_secs(10), || async {
            t.admin_json("/admin/keys/policy").await["activeKeyType"] == "secondary"
        })
        .await
    );
    assert_ne!(t.key(KeySlot::Secondary), secondary);
}

#[tokio::test]
async fn bad_policies_are_refused_and_change_nothing() {
    let sinks = tempfile::tempdir().unwrap();
    let t = TestServer::start_with(sink_settings(sinks.path())).await;
    let outside = std::env::temp_dir().join("elsewhere").join("cs");
    for (body, code) in [
        (json!({"every": "1s"}), "InvalidPolicy"),
        (json!({"every": "30d", "onlyIfIdle": "3h"}), "InvalidPolicy"),
        (
            json!({"every": "30d", "sinks": [{"kind": "file", "path": outside}]}),
            "InvalidSink",
        ),
        (
            json!({"every": "30d", "sinks": [{"kind": "file", "path": "relative/cs"}]}),
            "InvalidSink",
        ),
        (
            json!({"every": "30d", "sinks": [{"kind": "exec", "command": "true"}]}),
            "InvalidSink",
        ),
        (
            json!({"every": "30d", "sinks": [{"kind": "webhook", "url": "http://127.0.0.1:9/x"}]}),
            "InvalidSink",
        ),
        (json!({"every": "30d", "typo": 1}), "InvalidRequestBody"),
    ] {
        let response = t
            .http
            .put(t.admin_url("/admin/keys/policy"))
            .bearer_auth(t.admin_token())
            .json(&body)
            .send()
            .await
            .unwrap();
        common::assert_error(response, 400, code).await;
    }
    let none = t.admin_get("/admin/keys/policy").await;
    assert_eq!(none.status(), 404);
    let rotate = t.admin_post("/admin/keys/rotate", json!({})).await;
    assert_eq!(rotate.status(), 404, "no step without a policy");
}
