//! Start-up: TLS, configured public endpoints, and data directories that must stop the start
//! with a clear message instead of silently making new keys.

mod common;

use common::TestServer;
use hubbub_proto::keys::KeySlot;
use hubbub_server::clock::ManualClock;
use hubbub_server::Settings;

#[tokio::test]
async fn serves_https_when_given_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let t = TestServer::start_with(Settings {
        tls_cert: Some(cert_path),
        tls_key: Some(key_path),
        ..Settings::default()
    })
    .await;
    assert!(t.endpoint().starts_with("https://localhost:"));
    let health = t
        .http
        .head(t.public_url("/api/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(t.send_with_key(&t.key(KeySlot::Primary)).await, 202);
    // Plain HTTP is not served on the TLS listener.
    let plain = format!("http://{}/api/health", t.running().public_addr);
    assert!(t.http.get(plain).send().await.is_err());
}

#[tokio::test]
async fn unreadable_tls_files_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        tls_cert: Some(dir.path().join("missing-cert.pem")),
        tls_key: Some(dir.path().join("missing-key.pem")),
        ..Settings::default()
    };
    let config = TestServer::config(dir.path(), settings, ManualClock::starting_now());
    let err = hubbub_server::start(config).await.unwrap_err().to_string();
    assert!(
        err.contains("TLS certificate") && err.contains("missing-cert.pem"),
        "{err}"
    );
}

#[tokio::test]
async fn configured_public_endpoints_decide_the_connection_strings_and_audiences() {
    let t = TestServer::start_with(Settings {
        public_endpoint: Some(vec!["https://pubsub.example.com,http://localhost:9".into()]),
        ..Settings::default()
    })
    .await;
    let keys = t.keys().await;
    assert!(keys["primaryConnectionString"]
        .as_str()
        .unwrap()
        .starts_with("Endpoint=https://pubsub.example.com;AccessKey="));
    // A token for the public host is accepted although the request reaches 127.0.0.1 directly
    // (as behind a reverse proxy); a token naming the listener's own address is not.
    assert_eq!(t.send_with_key(&t.key(KeySlot::Primary)).await, 202);
    let port = t.running().public_addr.port();
    let path = "/api/hubs/chat/:send";
    let token = common::sign(
        serde_json::json!({"aud": format!("http://127.0.0.1:{port}{path}"), "exp": t.now() + 60}),
        &t.key(KeySlot::Primary),
    );
    assert_eq!(t.send_to_all("chat", &token).await.status(), 401);
}

#[tokio::test]
async fn a_corrupt_database_stops_the_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("hubbub.db"), vec![7u8; 4096]).unwrap();
    let config = TestServer::config(dir.path(), Settings::default(), ManualClock::starting_now());
    let err = hubbub_server::start(config).await.unwrap_err().to_string();
    assert!(err.contains("damaged or is not a Hubbub database"), "{err}");
    // The damaged file is left as it was, for the operator to inspect or restore.
    assert_eq!(
        std::fs::read(data.join("hubbub.db")).unwrap(),
        vec![7u8; 4096]
    );
}

#[tokio::test]
async fn a_data_dir_that_cannot_be_created_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data"), b"a file, not a directory").unwrap();
    let config = TestServer::config(dir.path(), Settings::default(), ManualClock::starting_now());
    let err = hubbub_server::start(config).await.unwrap_err().to_string();
    assert!(err.contains("cannot use the data directory"), "{err}");
}

#[tokio::test]
async fn a_busy_port_is_reported() {
    let t = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        listen: Some(t.running().public_addr.to_string()),
        ..Settings::default()
    };
    let config = TestServer::config(dir.path(), settings, ManualClock::starting_now());
    let err = hubbub_server::start(config).await.unwrap_err().to_string();
    assert!(
        err.contains("cannot listen on") && err.contains("public"),
        "{err}"
    );
}

#[tokio::test]
async fn the_state_and_the_config_print_no_secret() {
    let notifications: hubbub_server::keys::notices::NotificationSettings = toml::from_str(
        r#"email_to = ["ops@example.com"]
           smtp_host = "smtp.example.com"
           smtp_password = "smtp-password-value"
           webhook_url = "https://hooks.example.com/services/path-token"
           webhook_secret = "webhook-secret-value""#,
    )
    .unwrap();
    let settings = Settings {
        notifications: Some(notifications),
        ..Settings::default()
    };
    let t = TestServer::start_with(settings.clone()).await;
    let mut secrets = vec![
        "smtp-password-value".to_string(),
        "webhook-secret-value".into(),
        "path-token".into(),
        t.admin_token(),
    ];
    secrets.extend(KeySlot::ALL.iter().map(|slot| t.key(*slot)));
    let config = TestServer::config(&t.data_dir(), settings.clone(), ManualClock::starting_now());
    for text in [
        format!("{:?}", t.running().state),
        format!("{:#?}", t.running().state),
        format!("{:?}", t.running()),
        format!("{settings:?}"),
        format!("{config:?}"),
    ] {
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "a secret in {text}");
        }
    }
    let state = format!("{:?}", t.running().state);
    assert!(state.contains("[redacted]"), "{state}");
}
