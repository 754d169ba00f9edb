//! The endpoint under test: URLs and tokens minted exactly as the official SDKs mint them.

use anyhow::Context;
use hubbub_proto::connection_string::ConnectionString;
use serde_json::json;
use std::time::{SystemTime, UNIX_EPOCH};

pub struct Target {
    pub endpoint: String,
    key: String,
    pub hub: String,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

impl Target {
    pub fn parse(connection_string: &str, hub: &str) -> anyhow::Result<Self> {
        let parsed = ConnectionString::parse(connection_string).context("the connection string")?;
        Ok(Self {
            endpoint: parsed.endpoint,
            key: parsed.access_key,
            hub: hub.to_string(),
        })
    }

    /// `ws://…/client/hubs/{hub}?access_token=…` for a client in `groups`.
    pub fn client_url(&self, user: &str, groups: &[&str]) -> String {
        let now = now_secs();
        let claims = json!({"aud": format!("{}/client/hubs/{}", self.endpoint, self.hub), "iat": now, "exp": now + 3600, "sub": user, "webpubsub.group": groups});
        let token = hubbub_proto::jwt::sign(
            claims.as_object().expect("object"),
            self.key.as_bytes(),
            None,
        );
        let ws = self.endpoint.replacen("http", "ws", 1);
        format!("{ws}/client/hubs/{}?access_token={token}", self.hub)
    }

    /// A REST URL and its bearer token (`aud` = the full URL, as the JS SDK signs it).
    pub fn rest(&self, path_and_query: &str) -> (String, String) {
        let url = format!("{}/api/hubs/{}{path_and_query}", self.endpoint, self.hub);
        let now = now_secs();
        let claims = json!({"aud": url, "iat": now, "exp": now + 3600});
        let token = hubbub_proto::jwt::sign(
            claims.as_object().expect("object"),
            self.key.as_bytes(),
            None,
        );
        (url, token)
    }
}
