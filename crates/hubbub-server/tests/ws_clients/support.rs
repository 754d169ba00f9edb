//! What the WebSocket scenarios share: the subprotocols, REST calls signed with the current
//! primary key, and a network cut.

use crate::common::{TestServer, Ws};
use hubbub_proto::keys::KeySlot;

pub const JSON: &str = "json.webpubsub.azure.v1";
pub const RELIABLE: &str = "json.reliable.webpubsub.azure.v1";
pub const ALL_ROLES: &[&str] = &["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"];

/// A REST call signed with the current primary key, `api-version` added; returns the status.
pub async fn rest(
    t: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<(&str, Vec<u8>)>,
) -> u16 {
    let full = format!(
        "{path}{}api-version=2024-12-01",
        if path.contains('?') { "&" } else { "?" }
    );
    let mut request = t.rest_request(method, &t.key(KeySlot::Primary), &full);
    if let Some((content_type, bytes)) = body {
        request = request.header("content-type", content_type).body(bytes);
    }
    request.send().await.unwrap().status().as_u16()
}

pub async fn post_text(t: &TestServer, path: &str, text: &str) -> u16 {
    rest(
        t,
        reqwest::Method::POST,
        path,
        Some(("text/plain", text.as_bytes().to_vec())),
    )
    .await
}

/// `HEAD` on a connection of hub `hub`: 200 while it exists, 404 once it is gone.
pub async fn connection_status(t: &TestServer, id: &str) -> u16 {
    let path = format!("/api/hubs/hub/connections/{id}");
    rest(t, reqwest::Method::HEAD, &path, None).await
}

/// Drops the TCP connection without a close frame, as a network cut does.
pub fn cut(ws: Ws) {
    drop(ws);
}
