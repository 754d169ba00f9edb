//! Logs and probes of a real `hubbub serve`: JSON log lines carrying each REST call's request id
//! (never its token), and the admin readiness probe.

mod common;

use common::Hubbub;

#[tokio::test]
async fn json_logs_carry_the_request_id_of_a_rest_call_and_no_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = Hubbub::start_with(
        dir.path(),
        &["--log-format", "json"],
        &[("HUBBUB_LOG", "hubbub_server=debug")],
    )
    .expect("starts");
    let client = reqwest::Client::new();
    let token = "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjF9.not-a-signature";
    let response = client
        .post(format!(
            "http://{}/api/hubs/chat/:send?api-version=2024-12-01",
            server.public_addr
        ))
        .bearer_auth(token)
        .header("x-ms-client-request-id", "caller-42")
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let id = response.headers()["x-ms-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(id.len(), 32, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(response.headers()["x-ms-client-request-id"], "caller-42");
    let again = client
        .get(format!("http://{}/api/health", server.public_addr))
        .send()
        .await
        .unwrap();
    assert_ne!(again.headers()["x-ms-request-id"].to_str().unwrap(), id);

    let stderr = server.stop_for_stderr();
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let call = lines
        .iter()
        .find(|l| l["message"] == "REST call refused")
        .unwrap_or_else(|| panic!("no line for the refused call: {stderr}"));
    assert_eq!(call["span"]["request_id"], id.as_str(), "{call}");
    assert_eq!(call["status"], 401);
    assert_eq!(call["path"], "/api/hubs/chat/:send");
    assert!(!stderr.contains(token) && !stderr.contains("not-a-signature"));
}

#[tokio::test]
async fn the_admin_readiness_probe_checks_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let server = Hubbub::start(dir.path());
    let client = reqwest::Client::new();
    let url = format!("{}/admin/health", server.admin_url());
    assert_eq!(client.get(&url).send().await.unwrap().status(), 401);
    let token = std::fs::read_to_string(dir.path().join("admin-token")).unwrap();
    let response = client
        .get(&url)
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"status": "ready", "checks": {"database": {"ok": true}}})
    );
    server.terminate();
}
