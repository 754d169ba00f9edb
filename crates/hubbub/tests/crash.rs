//! Crash safety: regenerate keys continuously, `kill -9` the server at random moments, restart.
//! After every restart each slot holds a whole key, and no acknowledged regeneration is lost.

mod common;

use common::{get_json, Hubbub};
use serde_json::Value;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ROUNDS: usize = 12;

/// A random number without a random-number crate: std's per-process random hasher keys.
fn random_below(n: u64) -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(n);
    hasher.finish() % n
}

/// The newest acknowledged state of a slot: its version and, for access keys, its value.
#[derive(Debug, Clone, Default)]
struct Acked {
    version: u64,
    value: Option<String>,
}

fn check_key(value: &str) {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(value)
        .unwrap_or_else(|_| panic!("a key is not base64: {value:?}"));
    assert_eq!(raw.len(), 32, "a key is not 32 bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_regenerations_survive_kill_9_at_any_moment() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut acked: [Acked; 3] = Default::default();
    let slots = ["primary", "secondary", "salt"];
    let mut total_acked = 0;

    // The last round only checks what the previous kill left.
    for round in 0..=ROUNDS {
        let server = Hubbub::start(&data);
        let token = std::fs::read_to_string(data.join("admin-token"))
            .unwrap()
            .trim()
            .to_string();
        let admin = server.admin_url();

        // What the server holds now must include every acknowledged change.
        let shown = get_json(&http, &format!("{admin}/admin/keys"), Some(&token)).await;
        for (i, slot) in slots.iter().enumerate() {
            let version = shown[slot]["version"].as_u64().unwrap();
            assert!(
                version >= acked[i].version,
                "round {round}: {slot} went back from version {} to {version}",
                acked[i].version
            );
            if let Some(value) = &acked[i].value {
                if version == acked[i].version {
                    assert_eq!(
                        shown[format!("{slot}Key")].as_str(),
                        Some(value.as_str()),
                        "round {round}: {slot}"
                    );
                }
            }
        }
        check_key(shown["primaryKey"].as_str().unwrap());
        check_key(shown["secondaryKey"].as_str().unwrap());
        if round == ROUNDS {
            break;
        }
        for (i, slot) in slots.iter().enumerate() {
            acked[i].version = shown[slot]["version"].as_u64().unwrap();
            acked[i].value = shown
                .get(format!("{slot}Key"))
                .and_then(Value::as_str)
                .map(str::to_owned);
        }

        // Regenerate as fast as possible from two callers; record what was acknowledged.
        let log: Arc<Mutex<Vec<(usize, Acked)>>> = Arc::default();
        let mut callers = Vec::new();
        for caller in 0..2 {
            let (http, admin, token, log) =
                (http.clone(), admin.clone(), token.clone(), Arc::clone(&log));
            callers.push(tokio::spawn(async move {
                for n in 0usize.. {
                    let i = (n + caller) % 3;
                    let body = serde_json::json!({ "keyType": slots[i] });
                    let Ok(response) = http
                        .post(format!("{admin}/admin/keys/regenerate"))
                        .bearer_auth(&token)
                        .json(&body)
                        .send()
                        .await
                    else {
                        return;
                    };
                    let Ok(keys) = response.json::<Value>().await else {
                        return;
                    };
                    let version = keys[slots[i]]["version"].as_u64().unwrap();
                    let value = keys
                        .get(format!("{}Key", slots[i]))
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    log.lock().unwrap().push((i, Acked { version, value }));
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(20 + random_below(300))).await;
        server.kill9();
        for caller in callers {
            let _ = caller.await;
        }
        for (i, change) in log.lock().unwrap().drain(..) {
            total_acked += 1;
            if change.version > acked[i].version {
                acked[i] = change;
            }
        }
    }
    assert!(
        total_acked > ROUNDS,
        "the test must actually regenerate keys ({total_acked} acknowledged)"
    );
}
