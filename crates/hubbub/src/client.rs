//! CLI commands that talk to a running server through its admin API.

use crate::cli::{AdminArgs, KeyCommand};
use anyhow::{anyhow, bail, Context};
use hubbub_proto::error::ErrorDetail;
use hubbub_proto::keys::{KeySlot, WebPubSubKeys};
use std::time::Duration;

pub async fn key(command: KeyCommand) -> anyhow::Result<()> {
    let keys: WebPubSubKeys = match command {
        KeyCommand::Show(admin) => Admin::new(&admin)?.get("/admin/keys").await?,
        KeyCommand::Regenerate { key_type, admin } => {
            let slot = KeySlot::from(key_type);
            let body = serde_json::json!({ "keyType": slot });
            Admin::new(&admin)?
                .post("/admin/keys/regenerate", &body)
                .await?
        }
    };
    println!("{}", serde_json::to_string_pretty(&keys)?);
    Ok(())
}

struct Admin {
    url: String,
    token: String,
    http: reqwest::Client,
}

impl Admin {
    fn new(args: &AdminArgs) -> anyhow::Result<Self> {
        let token = match &args.admin_token {
            Some(token) => token.trim().to_string(),
            None => {
                let path = args.data_dir.join("admin-token");
                std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!(
                            "no admin token: pass --admin-token or HUBBUB_ADMIN_TOKEN, or point --data-dir at the server's data directory (cannot read {})",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_string()
            }
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .context("cannot build an HTTP client")?;
        Ok(Self {
            url: args.admin_url.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.http.get(format!("{}{path}", self.url)))
            .await
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<T> {
        self.send(self.http.post(format!("{}{path}", self.url)).json(body))
            .await
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let response = request.bearer_auth(&self.token).send().await.map_err(|e| {
            let why = if e.is_connect() {
                "connection refused or unreachable; is `hubbub serve` running?"
            } else if e.is_timeout() {
                "timed out"
            } else {
                "request failed"
            };
            anyhow!("cannot reach the Hubbub admin API at {}: {why}", self.url)
        })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .context("reading the admin API's answer")?;
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorDetail>(&bytes)
                .map(|d| d.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).chars().take(200).collect());
            if status == reqwest::StatusCode::UNAUTHORIZED {
                bail!(
                    "the admin API at {} refused the admin token: {message}",
                    self.url
                );
            }
            bail!("the admin API at {} answered {status}: {message}", self.url);
        }
        serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "the admin API at {} answered with unexpected JSON",
                self.url
            )
        })
    }
}
