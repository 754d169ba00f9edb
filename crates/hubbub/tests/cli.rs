//! The `hubbub` binary as a user runs it: `serve`, `key show`, `key regenerate`, errors.

mod common;

use common::{cli, rest_send, stdout_json, Hubbub};
use std::process::Command;

fn field_names(value: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
    names.sort();
    names
}

/// Stdout is a pipe here, as under a service manager or a log collector: the first start says
/// where to get the connection strings instead of printing them (on a terminal it prints them:
/// the unit test of the banner covers that).
#[test]
fn first_start_points_to_key_show_and_later_starts_reuse_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Hubbub::start(&data);
    let banner = server.banner.join("\n");
    assert!(banner.contains("New Hubbub instance"), "{banner}");
    assert!(
        banner.contains(&format!(
            "connection strings: not printed (stdout is not a terminal); run `hubbub key show \
             --admin-url {} --data-dir {}`",
            server.admin_url(),
            data.display()
        )),
        "{banner}"
    );
    assert!(
        banner.contains(&format!("admin URL: {}", server.admin_url())),
        "{banner}"
    );
    assert!(banner.contains("admin token file: "), "{banner}");
    let keys = stdout_json(&server.cli(&["key", "show"]));
    for slot in ["primary", "secondary"] {
        let connection_string = keys[format!("{slot}ConnectionString")].as_str().unwrap();
        let key = keys[format!("{slot}Key")].as_str().unwrap();
        assert!(
            connection_string.starts_with("Endpoint=http://localhost:"),
            "{connection_string}"
        );
        assert!(!banner.contains(key), "no key on a piped stdout: {banner}");
    }
    assert!(!banner.contains("AccessKey="), "{banner}");
    assert_eq!(
        server.terminate().code(),
        Some(0),
        "graceful exit on SIGTERM"
    );

    let again = Hubbub::start(&data);
    let banner = again.banner.join("\n");
    assert!(!banner.contains("New Hubbub instance"), "{banner}");
    assert!(
        !banner.contains("AccessKey="),
        "keys are not printed again: {banner}"
    );
    let reloaded = stdout_json(&again.cli(&["key", "show"]));
    assert_eq!(reloaded["primaryKey"], keys["primaryKey"]);
    assert_eq!(reloaded["secondaryKey"], keys["secondaryKey"]);
}

#[test]
fn key_show_prints_exactly_the_az_cli_fields() {
    let dir = tempfile::tempdir().unwrap();
    let server = Hubbub::start(dir.path());
    let keys = stdout_json(&server.cli(&["key", "show"]));
    assert_eq!(
        field_names(&keys),
        [
            "primaryConnectionString",
            "primaryKey",
            "secondaryConnectionString",
            "secondaryKey"
        ]
    );
    let port = server.public_addr.rsplit(':').next().unwrap();
    for slot in ["primary", "secondary"] {
        let key = keys[format!("{slot}Key")].as_str().unwrap();
        assert_eq!(key.len(), 44);
        assert_eq!(
            keys[format!("{slot}ConnectionString")],
            format!("Endpoint=http://localhost:{port};AccessKey={key};Version=1.0;")
        );
    }
}

#[test]
fn key_regenerate_replaces_exactly_one_slot() {
    let dir = tempfile::tempdir().unwrap();
    let server = Hubbub::start(dir.path());
    let before = stdout_json(&server.cli(&["key", "show"]));
    let after = stdout_json(&server.cli(&["key", "regenerate", "--key-type", "primary"]));
    assert_eq!(field_names(&after), field_names(&before));
    assert_ne!(after["primaryKey"], before["primaryKey"]);
    assert_eq!(after["secondaryKey"], before["secondaryKey"]);
    let after2 = stdout_json(&server.cli(&["key", "regenerate", "--key-type", "secondary"]));
    assert_eq!(after2["primaryKey"], after["primaryKey"]);
    assert_ne!(after2["secondaryKey"], after["secondaryKey"]);
    let after3 = stdout_json(&server.cli(&["key", "regenerate", "--key-type", "salt"]));
    assert_eq!(after3["primaryKey"], after2["primaryKey"]);
    assert_eq!(after3["secondaryKey"], after2["secondaryKey"]);
}

fn one_line_error(output: &std::process::Output) -> String {
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(output.stdout.is_empty());
    stderr
}

#[test]
fn cli_errors_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = Hubbub::start(dir.path());
    let wrong = Command::new(common::BIN)
        .args([
            "key",
            "show",
            "--admin-url",
            &server.admin_url(),
            "--admin-token",
            "wrong",
        ])
        .output()
        .unwrap();
    let stderr = one_line_error(&wrong);
    assert!(stderr.contains("refused the admin token"), "{stderr}");

    // The token from the environment works.
    let token = std::fs::read_to_string(dir.path().join("admin-token")).unwrap();
    let from_env = Command::new(common::BIN)
        .args(["key", "show", "--admin-url", &server.admin_url()])
        .env("HUBBUB_ADMIN_TOKEN", token.trim())
        .env("HUBBUB_DATA_DIR", "/nonexistent")
        .output()
        .unwrap();
    assert!(stdout_json(&from_env)["primaryKey"].is_string());

    let no_token = cli(
        &["key", "show"],
        &server.admin_url(),
        &dir.path().join("elsewhere"),
    );
    let stderr = one_line_error(&no_token);
    assert!(stderr.contains("no admin token"), "{stderr}");

    drop(server);
    let not_running = cli(&["key", "show"], "http://127.0.0.1:9", dir.path());
    let stderr = one_line_error(&not_running);
    assert!(stderr.contains("is `hubbub serve` running?"), "{stderr}");

    let bad_type = cli(
        &["key", "regenerate", "--key-type", "tertiary"],
        "http://127.0.0.1:9",
        dir.path(),
    );
    assert!(!bad_type.status.success());
    assert!(String::from_utf8_lossy(&bad_type.stderr).contains("tertiary"));
}

#[test]
fn serve_refuses_a_corrupt_database_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hubbub.db"), vec![1u8; 4096]).unwrap();
    let err = Hubbub::start_with(dir.path(), &[], &[])
        .err()
        .expect("start must fail");
    assert!(err.contains("damaged or is not a Hubbub database"), "{err}");
    assert!(
        !dir.path().join("admin-token").exists(),
        "no new instance was made"
    );
}

#[test]
fn settings_come_from_file_then_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hubbub.toml");
    std::fs::write(
        &config,
        "public_endpoint = [\"http://from-file:1\"]\ntoken_leeway_secs = 60\n",
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();
    let data = dir.path().join("data");
    let from_file = Hubbub::start_with(&data, &["--config", config_arg], &[]).unwrap();
    assert!(from_file
        .banner
        .contains(&"public endpoint: http://from-file:1".to_string()));
    drop(from_file);
    let env = [("HUBBUB_PUBLIC_ENDPOINT", "http://from-env:2")];
    let from_env = Hubbub::start_with(&data, &["--config", config_arg], &env).unwrap();
    assert!(from_env
        .banner
        .contains(&"public endpoint: http://from-env:2".to_string()));
    drop(from_env);
    let flags = [
        "--config",
        config_arg,
        "--public-endpoint",
        "http://from-flag:3,http://other:4",
    ];
    let from_flag = Hubbub::start_with(&data, &flags, &env).unwrap();
    assert!(from_flag
        .banner
        .contains(&"public endpoint: http://from-flag:3".to_string()));
    assert!(from_flag
        .banner
        .contains(&"accepted endpoints: http://from-flag:3, http://other:4".to_string()));
    drop(from_flag);

    std::fs::write(&config, "listen = 8080\n").unwrap();
    let err = Hubbub::start_with(&data, &["--config", config_arg], &[])
        .err()
        .unwrap();
    assert!(err.contains("is not valid"), "{err}");
    let err = Hubbub::start_with(&data, &["--public-endpoint", "ftp://x"], &[])
        .err()
        .unwrap();
    assert!(err.contains("not an absolute http or https URL"), "{err}");
}

#[test]
fn hub_settings_from_the_cli_and_from_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hubbub.toml");
    std::fs::write(
        &config,
        r#"
[hubs.Declared]
anonymous_connect_policy = "allow"
[[hubs.Declared.event_handlers]]
url_template = "http://127.0.0.1:9/api/{hub}/{event}"
user_event_pattern = "*"
system_events = ["connect", "disconnected"]
"#,
    )
    .unwrap();
    let data = dir.path().join("data");
    let server = Hubbub::start_with(&data, &["--config", config.to_str().unwrap()], &[]).unwrap();
    let declared = stdout_json(&server.cli(&["hub", "show", "--hub-name", "declared"]));
    assert_eq!(declared["properties"]["anonymousConnectPolicy"], "allow");
    assert_eq!(
        declared["properties"]["eventHandlers"][0]["systemEvents"],
        serde_json::json!(["connect", "disconnected"])
    );

    let created = stdout_json(&server.cli(&[
        "hub",
        "create",
        "--hub-name",
        "Chat",
        "--event-handler",
        "url-template=http://127.0.0.1:9/a/{event}",
        "user-event-pattern=chat,typing",
        "system-event=connected",
        "--event-handler",
        "url-template=http://127.0.0.1:9/b/{event}",
        "system-event=connect",
        "--allow-anonymous",
        "false",
    ]));
    assert_eq!(created["name"], "chat");
    let handlers = created["properties"]["eventHandlers"].as_array().unwrap();
    assert_eq!(handlers.len(), 2);
    assert_eq!(handlers[0]["userEventPattern"], "chat,typing");
    assert_eq!(handlers[1]["systemEvents"], serde_json::json!(["connect"]));

    let again = server.cli(&[
        "hub",
        "create",
        "--hub-name",
        "chat",
        "--allow-anonymous",
        "true",
    ]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already has settings"));
    let updated = stdout_json(&server.cli(&[
        "hub",
        "update",
        "--hub-name",
        "chat",
        "--allow-anonymous",
        "true",
    ]));
    assert_eq!(updated["properties"]["anonymousConnectPolicy"], "allow");
    assert_eq!(
        updated["properties"]["eventHandlers"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "update keeps what it was not told to change"
    );

    let bad = server.cli(&[
        "hub",
        "update",
        "--hub-name",
        "chat",
        "--event-handler",
        "url-template=ftp://x",
    ]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("http://"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    let list = stdout_json(&server.cli(&["hub", "list"]));
    let names: Vec<_> = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["chat", "declared"]);
    stdout_json(&server.cli(&["hub", "delete", "--hub-name", "chat"]));
    let missing = server.cli(&["hub", "show", "--hub-name", "chat"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));
}

#[test]
fn key_usage_rotation_requirements_regenerate_warnings_and_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let server = Hubbub::start(dir.path());
    let keys = stdout_json(&server.cli(&["key", "show"]));
    let primary = keys["primaryKey"].as_str().unwrap().to_string();
    assert_eq!(rest_send(&server, &primary), 202);
    assert_eq!(rest_send(&server, &primary), 202);
    let usage = stdout_json(&server.cli(&["key", "usage"]));
    assert_eq!(
        stdout_json(&server.cli(&["key", "notices"])),
        serde_json::json!([]),
        "no notifications configured"
    );
    assert_eq!(usage["primary"]["restRequests"], 2);
    assert_eq!(usage["secondary"]["restRequests"], 0);

    // Regenerating a key in use warns (stdin is not a terminal here, so it goes on).
    let regenerated = server.cli(&["key", "regenerate", "--key-type", "primary"]);
    let stderr = String::from_utf8_lossy(&regenerated.stderr);
    assert!(
        stderr.contains("authenticated 2 requests and connections in the last 15 minutes"),
        "{stderr}"
    );
    let new_keys = stdout_json(&regenerated);
    assert_ne!(new_keys["primaryKey"], keys["primaryKey"]);
    let quiet = server.cli(&["key", "regenerate", "--key-type", "secondary"]);
    assert!(
        quiet.stderr.is_empty(),
        "an unused key regenerates without a warning"
    );

    // A rotation requirement: key show stays exactly the four fields and warns on stderr.
    let required = server.cli(&[
        "key",
        "require-rotation",
        "--key-type",
        "secondary",
        "--by",
        "7d",
        "--reason",
        "quarterly rotation",
    ]);
    assert!(
        required.status.success(),
        "{}",
        String::from_utf8_lossy(&required.stderr)
    );
    let shown = server.cli(&["key", "show"]);
    assert_eq!(stdout_json(&shown).as_object().unwrap().len(), 4);
    let stderr = String::from_utf8_lossy(&shown.stderr);
    assert!(
        stderr.contains("the secondary key must be rotated by")
            && stderr.contains("quarterly rotation"),
        "{stderr}"
    );
    let bad = server.cli(&[
        "key",
        "require-rotation",
        "--key-type",
        "primary",
        "--by",
        "whenever",
        "--reason",
        "x",
    ]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("RFC 3339"));

    // Grace: the old value keeps working for a while.
    let before = stdout_json(&server.cli(&["key", "show"]))["primaryKey"]
        .as_str()
        .unwrap()
        .to_string();
    stdout_json(&server.cli(&[
        "key",
        "regenerate",
        "--key-type",
        "primary",
        "--grace",
        "15m",
        "--yes",
    ]));
    assert_eq!(rest_send(&server, &before), 202);

    // The audit log, as a table and as JSON.
    let table = server.cli(&["audit"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("rotation_required") && text.contains("quarterly rotation"),
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.contains("regenerated")).count(),
        3
    );
    let json = server.cli(&["audit", "--json"]);
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        events.len(),
        7,
        "3 generated, 3 regenerated, 1 rotation required"
    );
    assert!(events.iter().all(|e| !e.to_string().contains(&primary)));
    let since_future = server.cli(&["audit", "--since", "2999-01-01T00:00:00Z"]);
    assert!(since_future.stdout.is_empty());
}
