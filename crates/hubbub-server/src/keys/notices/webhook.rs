//! Notices by webhook: a JSON POST signed with the webhook secret (`X-Hubbub-Signature`,
//! `X-Hubbub-Timestamp`), so the receiver can check it came from this instance.

use super::{Channel, NotificationSettings, Sending};
use crate::clock::rfc3339;
use crate::store::Notice;
use futures_util::future::BoxFuture;
use hubbub_proto::jwt::hmac_sha256;

#[derive(Debug)]
pub struct Webhook;

impl Channel for Webhook {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn configured(&self, settings: &NotificationSettings) -> bool {
        settings.webhook_url.is_some()
    }

    fn validate(&self, settings: &NotificationSettings) -> Result<(), String> {
        let url = settings.webhook_url.as_deref().unwrap_or_default();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("webhook_url '{url}' must be an http(s) URL"));
        }
        if settings
            .webhook_secret
            .as_deref()
            .is_none_or(|s| s.len() < 16)
        {
            return Err("webhook_url needs a webhook_secret of at least 16 characters".into());
        }
        Ok(())
    }

    fn send<'a>(
        &'a self,
        sending: &'a Sending<'a>,
        notice: &'a Notice,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(send(sending, notice))
    }
}

/// `X-Hubbub-Signature: sha256=<hex HMAC(secret, "<timestamp>.<body>")>` with `X-Hubbub-Timestamp`.
pub fn webhook_signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mac = hmac_sha256(secret.as_bytes(), format!("{timestamp}.{body}").as_bytes());
    format!(
        "sha256={}",
        mac.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

async fn send(sending: &Sending<'_>, notice: &Notice) -> Result<(), String> {
    let settings = sending.settings;
    let url = settings.webhook_url.as_deref().ok_or("no webhook_url")?;
    let secret = settings.webhook_secret.as_deref().unwrap_or_default();
    let mut payload: serde_json::Value = serde_json::from_str(&notice.payload).unwrap_or_default();
    payload["noticeId"] = serde_json::json!(notice.id);
    payload["subject"] = serde_json::json!(notice.subject);
    payload["createdAt"] = serde_json::json!(rfc3339(notice.created_at));
    let signed = Signed {
        url,
        secret,
        content_type: "application/json",
        body: payload.to_string(),
        timestamp: sending.now / 1000,
        what: "the webhook",
    };
    signed.post(sending.http).await
}

/// A JSON POST signed with a secret (`X-Hubbub-Timestamp`, `X-Hubbub-Signature`): the notices,
/// the CloudEvents and the rotation policy's webhook sinks all go out this way.
pub struct Signed<'a> {
    pub url: &'a str,
    pub secret: &'a str,
    pub content_type: &'a str,
    pub body: String,
    /// Unix seconds.
    pub timestamp: i64,
    /// How errors name the receiver ("the webhook").
    pub what: &'a str,
}

impl Signed<'_> {
    /// Sends it; an error says what went wrong without the URL (it may hold a secret).
    pub async fn post(self, http: &reqwest::Client) -> Result<(), String> {
        let what = self.what;
        let response = http
            .post(self.url)
            .header("content-type", self.content_type)
            .header("X-Hubbub-Timestamp", self.timestamp.to_string())
            .header(
                "X-Hubbub-Signature",
                webhook_signature(self.secret, self.timestamp, &self.body),
            )
            .body(self.body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    format!("{what} did not answer in time")
                } else {
                    format!("cannot reach {what}")
                }
            })?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("{what} answered {}", response.status().as_u16()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_signatures_cover_timestamp_and_body() {
        let a = webhook_signature("secret-secret-secret", 100, "{}");
        assert!(a.starts_with("sha256=") && a.len() == 71);
        assert_ne!(a, webhook_signature("secret-secret-secret", 101, "{}"));
        assert_ne!(a, webhook_signature("secret-secret-secret", 100, "{ }"));
    }
}
