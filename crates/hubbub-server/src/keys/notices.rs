//! Notices to operators about keys: rotation required, deadline near, key disabled, key age
//! due. Queued once per notice and channel in the store, then sent by email (SMTP) and/or a
//! signed webhook, retried with backoff until delivered. No key material ever goes out.

use crate::clock::{rfc3339, UnixMillis};
use crate::keys::KeyRing;
use crate::store::{NewNotice, Notice, Store};
use hubbub_proto::jwt::hmac_sha256;
use hubbub_proto::keys::KeySlot;
use serde::Deserialize;
use std::time::Duration;

const DAY_MS: i64 = 24 * 3600 * 1000;
/// Age-policy warnings go out this many days before a key is due.
pub const AGE_WARNINGS_DAYS: [i64; 3] = [30, 7, 1];

/// `[notifications]` in the config file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NotificationSettings {
    #[serde(default)]
    pub email_to: Vec<String>,
    pub email_from: Option<String>,
    pub smtp_host: Option<String>,
    pub smtp_port: Option<u16>,
    /// `none`, `starttls` or `tls` (default `starttls`).
    pub smtp_security: Option<String>,
    pub smtp_username: Option<String>,
    pub smtp_password: Option<String>,
    pub webhook_url: Option<String>,
    pub webhook_secret: Option<String>,
    /// First retry delay in seconds (doubles per attempt, at most an hour); default 30.
    pub retry_base_secs: Option<u64>,
}

impl NotificationSettings {
    pub fn validate(&self) -> Result<(), String> {
        if !self.email_to.is_empty() {
            if self.smtp_host.as_deref().is_none_or(str::is_empty) {
                return Err("email_to needs smtp_host".into());
            }
            for address in self.email_to.iter().chain(self.email_from.iter()) {
                address
                    .parse::<lettre::Address>()
                    .map_err(|_| format!("'{address}' is not an email address"))?;
            }
            if !matches!(
                self.smtp_security.as_deref(),
                None | Some("none" | "starttls" | "tls")
            ) {
                return Err("smtp_security must be none, starttls or tls".into());
            }
        }
        if let Some(url) = &self.webhook_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("webhook_url '{url}' must be an http(s) URL"));
            }
            if self.webhook_secret.as_deref().is_none_or(|s| s.len() < 16) {
                return Err("webhook_url needs a webhook_secret of at least 16 characters".into());
            }
        }
        Ok(())
    }

    pub fn channels(&self) -> Vec<&'static str> {
        let mut channels = Vec::new();
        if !self.email_to.is_empty() {
            channels.push("email");
        }
        if self.webhook_url.is_some() {
            channels.push("webhook");
        }
        channels
    }

    fn retry_base(&self) -> Duration {
        Duration::from_secs(self.retry_base_secs.unwrap_or(30).max(1))
    }
}

/// What one notice says, before it becomes an email and a webhook payload.
struct Draft<'a> {
    kind: &'a str,
    slot: KeySlot,
    version: u64,
    /// Makes the dedup key unique per warning window.
    dedup_tail: &'a str,
    subject: String,
    lines: Vec<String>,
    extra: serde_json::Value,
}

impl Draft<'_> {
    fn into_notice(self, endpoint: &str) -> NewNotice {
        let Draft {
            kind,
            slot,
            version,
            dedup_tail,
            subject,
            lines,
            extra,
        } = self;
        let mut body = format!("Hubbub instance {endpoint}\n\n");
        for line in lines {
            body.push_str(&line);
            body.push('\n');
        }
        body.push_str(
            "\nTo rotate without downtime: move every app to the other key's connection string, run\n\
             `hubbub key regenerate --key-type <this key>`, then move the apps to the new connection string.\n",
        );
        let mut payload = serde_json::json!({"type": kind, "slot": slot.as_str(), "keyVersion": version, "endpoint": endpoint});
        if let (Some(p), Some(e)) = (payload.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        NewNotice {
            dedup: format!("{kind}:{slot}:v{version}{dedup_tail}"),
            kind: kind.to_string(),
            subject: format!("[Hubbub] {subject}"),
            body,
            payload: payload.to_string(),
        }
    }
}

/// The notices the key ring calls for now (the store drops ones queued before).
pub fn due(
    ring: &KeyRing,
    max_age_days: Option<u32>,
    now: UnixMillis,
    endpoint: &str,
) -> Vec<NewNotice> {
    let mut drafts = Vec::new();
    for slot in [KeySlot::Primary, KeySlot::Secondary] {
        let key = ring.slot(slot);
        let version = key.version;
        if let Some(r) = ring.requirement(slot) {
            let deadline = rfc3339(r.deadline);
            let extra = serde_json::json!({"deadline": deadline, "reason": r.reason});
            let reason = format!("Reason: {}", r.reason);
            drafts.push(Draft {
                kind: "rotation_required",
                slot,
                version,
                dedup_tail: "",
                subject: format!("The {slot} key must be rotated by {deadline}"),
                lines: vec![
                    format!("The {slot} key must be rotated by {deadline}."),
                    reason.clone(),
                    "After the deadline it stops authenticating until it is regenerated.".into(),
                ],
                extra: extra.clone(),
            });
            if now >= r.deadline {
                drafts.push(Draft {
                    kind: "key_disabled",
                    slot,
                    version,
                    dedup_tail: "",
                    subject: format!("The {slot} key no longer authenticates"),
                    lines: vec![format!("The {slot} key passed its rotation deadline ({deadline}) and no longer authenticates."), reason],
                    extra,
                });
            } else if r.deadline - now <= DAY_MS {
                drafts.push(Draft {
                    kind: "rotation_deadline_near",
                    slot,
                    version,
                    dedup_tail: "",
                    subject: format!("The {slot} key must be rotated within a day"),
                    lines: vec![
                        format!("The {slot} key must be rotated by {deadline}."),
                        reason,
                    ],
                    extra,
                });
            }
        }
        if let Some(days) = max_age_days {
            let due_at = key.created_at + i64::from(days) * DAY_MS;
            let when = rfc3339(due_at);
            let extra = serde_json::json!({"dueAt": when, "maxAgeDays": days});
            if now >= due_at {
                drafts.push(Draft {
                    kind: "key_age_due",
                    slot,
                    version,
                    dedup_tail: ":due",
                    subject: format!("The {slot} key is older than {days} days"),
                    lines: vec![format!(
                        "The {slot} key reached the maximum age of {days} days on {when}."
                    )],
                    extra,
                });
            } else if let Some(window) = AGE_WARNINGS_DAYS
                .iter()
                .rev()
                .find(|w| now >= due_at - *w * DAY_MS)
            {
                drafts.push(Draft {
                    kind: "key_age_warning",
                    slot,
                    version,
                    dedup_tail: match window {
                        30 => ":30d",
                        7 => ":7d",
                        _ => ":1d",
                    },
                    subject: format!("The {slot} key is due for rotation within {window} days"),
                    lines: vec![format!(
                        "The {slot} key reaches the maximum age of {days} days on {when}."
                    )],
                    extra,
                });
            }
        }
    }
    drafts
        .into_iter()
        .map(|d| d.into_notice(endpoint))
        .collect()
}

/// Sends due notices; each success or failure is recorded. Runs on the housekeeper.
pub async fn deliver(
    store: &Store,
    settings: &NotificationSettings,
    http: &reqwest::Client,
    now: UnixMillis,
) {
    let due = match store.due_notices(now) {
        Ok(due) => due,
        Err(e) => return tracing::warn!(error = %e, "notices could not be read"),
    };
    for notice in due {
        let result = match notice.channel.as_str() {
            "email" => send_email(settings, &notice).await,
            "webhook" => send_webhook(settings, http, &notice, now).await,
            other => Err(format!("unknown channel {other}")),
        };
        let recorded = match result {
            Ok(()) => {
                tracing::info!(channel = %notice.channel, kind = %notice.kind, "notice sent");
                store.notice_sent(&notice, now)
            }
            Err(error) => {
                let delay = settings
                    .retry_base()
                    .saturating_mul(1 << notice.attempts.min(12))
                    .min(Duration::from_secs(3600));
                tracing::warn!(channel = %notice.channel, kind = %notice.kind, %error, retry_in_secs = delay.as_secs(), "notice not sent");
                store.notice_failed(&notice, &error, now + delay.as_millis() as i64, now)
            }
        };
        if let Err(e) = recorded {
            tracing::warn!(error = %e, "notice outcome could not be recorded");
        }
    }
}

async fn send_email(settings: &NotificationSettings, notice: &Notice) -> Result<(), String> {
    use lettre::message::Mailbox;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let host = settings.smtp_host.as_deref().ok_or("no smtp_host")?;
    let from: Mailbox = settings
        .email_from
        .as_deref()
        .unwrap_or("hubbub@localhost")
        .parse()
        .map_err(|_| "bad email_from".to_string())?;
    let mut builder = Message::builder()
        .from(from)
        .subject(notice.subject.clone());
    for to in &settings.email_to {
        builder = builder.to(to
            .parse::<Mailbox>()
            .map_err(|_| format!("bad address {to}"))?);
    }
    let message = builder
        .body(notice.body.clone())
        .map_err(|e| format!("cannot build the email: {e}"))?;
    let mut transport = match settings.smtp_security.as_deref().unwrap_or("starttls") {
        "none" => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
        "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(host).map_err(|e| e.to_string())?,
        _ => {
            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host).map_err(|e| e.to_string())?
        }
    }
    .timeout(Some(Duration::from_secs(20)));
    if let Some(port) = settings.smtp_port {
        transport = transport.port(port);
    }
    if let (Some(user), Some(password)) = (&settings.smtp_username, &settings.smtp_password) {
        transport =
            transport.credentials(lettre::transport::smtp::authentication::Credentials::new(
                user.clone(),
                password.clone(),
            ));
    }
    transport
        .build()
        .send(message)
        .await
        .map(|_| ())
        .map_err(|e| {
            if e.is_transient() {
                "the mail server refused for now".to_string()
            } else {
                "cannot deliver to the mail server".to_string()
            }
        })
}

/// `X-Hubbub-Signature: sha256=<hex HMAC(secret, "<timestamp>.<body>")>` with `X-Hubbub-Timestamp`.
pub fn webhook_signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mac = hmac_sha256(secret.as_bytes(), format!("{timestamp}.{body}").as_bytes());
    format!(
        "sha256={}",
        mac.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

async fn send_webhook(
    settings: &NotificationSettings,
    http: &reqwest::Client,
    notice: &Notice,
    now: UnixMillis,
) -> Result<(), String> {
    let url = settings.webhook_url.as_deref().ok_or("no webhook_url")?;
    let secret = settings.webhook_secret.as_deref().unwrap_or_default();
    let mut payload: serde_json::Value = serde_json::from_str(&notice.payload).unwrap_or_default();
    payload["noticeId"] = serde_json::json!(notice.id);
    payload["subject"] = serde_json::json!(notice.subject);
    payload["createdAt"] = serde_json::json!(rfc3339(notice.created_at));
    let body = payload.to_string();
    let timestamp = now / 1000;
    let response = http
        .post(url)
        .header("content-type", "application/json")
        .header("X-Hubbub-Timestamp", timestamp.to_string())
        .header(
            "X-Hubbub-Signature",
            webhook_signature(secret, timestamp, &body),
        )
        .body(body)
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                "the webhook did not answer in time".to_string()
            } else {
                "cannot reach the webhook".to_string()
            }
        })?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!(
            "the webhook answered {}",
            response.status().as_u16()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_validation() {
        assert!(NotificationSettings::default().validate().is_ok());
        let bad = NotificationSettings {
            email_to: vec!["ops@example.com".into()],
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("smtp_host"));
        let bad = NotificationSettings {
            email_to: vec!["not an address".into()],
            smtp_host: Some("h".into()),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        let bad = NotificationSettings {
            webhook_url: Some("https://h/x".into()),
            webhook_secret: Some("short".into()),
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("16"));
        let good = NotificationSettings {
            email_to: vec!["ops@example.com".into()],
            smtp_host: Some("localhost".into()),
            webhook_url: Some("https://h/x".into()),
            webhook_secret: Some("0123456789abcdef".into()),
            ..Default::default()
        };
        assert!(good.validate().is_ok());
        assert_eq!(good.channels(), ["email", "webhook"]);
    }

    fn ring(created_at: UnixMillis) -> KeyRing {
        let key = |v: &str| crate::keys::SlotKey {
            value: crate::secret::Secret::new(v.into()),
            version: 1,
            created_at,
        };
        KeyRing {
            primary: key("p"),
            secondary: key("s"),
            salt: key("x"),
            requirements: Vec::new(),
            retiring: Vec::new(),
        }
    }

    #[test]
    fn age_warnings_at_30_7_and_1_days_then_due() {
        let kinds = |now: UnixMillis| -> Vec<String> {
            due(&ring(0), Some(90), now, "http://h")
                .into_iter()
                .filter(|n| n.dedup.contains("primary"))
                .map(|n| n.dedup)
                .collect()
        };
        assert!(kinds(59 * DAY_MS).is_empty());
        assert_eq!(kinds(60 * DAY_MS), ["key_age_warning:primary:v1:30d"]);
        assert_eq!(kinds(83 * DAY_MS), ["key_age_warning:primary:v1:7d"]);
        assert_eq!(kinds(89 * DAY_MS), ["key_age_warning:primary:v1:1d"]);
        assert_eq!(kinds(90 * DAY_MS), ["key_age_due:primary:v1:due"]);
        assert!(
            due(&ring(0), None, 90 * DAY_MS, "http://h").is_empty(),
            "no policy, no notices"
        );
    }

    #[test]
    fn webhook_signatures_cover_timestamp_and_body() {
        let a = webhook_signature("secret-secret-secret", 100, "{}");
        assert!(a.starts_with("sha256=") && a.len() == 71);
        assert_ne!(a, webhook_signature("secret-secret-secret", 101, "{}"));
        assert_ne!(a, webhook_signature("secret-secret-secret", 100, "{ }"));
    }
}
