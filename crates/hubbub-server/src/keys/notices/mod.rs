//! Notices to operators about keys: rotation required, deadline near, key disabled, key age
//! due ([`texts`]). Queued once per notice and channel in the store, then sent on each
//! configured [`Channel`], retried with backoff until delivered. No key material ever goes out.
//!
//! | module | channel |
//! |---|---|
//! | [`email`] | email over SMTP (lettre) |
//! | [`webhook`] | a signed HTTP POST (`X-Hubbub-Signature`) |
//! | [`cloudevents`] | every key event as a signed CloudEvent 1.0 (structured JSON) |
//!
//! Adding a channel: a module here implementing [`Channel`], its settings in
//! [`NotificationSettings`], and its line in [`CHANNELS`].

pub mod cloudevents;
pub mod email;
pub mod texts;
pub mod webhook;

pub use texts::{due, AGE_WARNINGS_DAYS};
pub use webhook::webhook_signature;

use crate::clock::UnixMillis;
use crate::store::{Notice, Store};
use futures_util::future::BoxFuture;
use serde::Deserialize;
use std::time::Duration;

/// Notices this node has settled (queued here, or claimed by another node), so a notice that
/// stays due is not claimed or written again at every housekeeping pass. Bounded: when full it
/// starts over, which costs one more claim per notice (the store and the claim keep each notice
/// once anyway).
#[derive(Debug, Default)]
pub struct Settled(std::sync::Mutex<std::collections::HashSet<String>>);

/// Dedup keys a node remembers as settled, at most.
const MAX_SETTLED: usize = 4096;

impl Settled {
    fn set(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn contains(&self, dedup: &str) -> bool {
        self.set().contains(dedup)
    }

    pub fn insert(&self, dedup: &str) {
        let mut set = self.set();
        if set.len() >= MAX_SETTLED {
            set.clear();
        }
        set.insert(dedup.to_string());
    }
}

/// Every channel notices can go out on, by the name the store queues them under.
pub static CHANNELS: &[&dyn Channel] =
    &[&email::Email, &webhook::Webhook, &cloudevents::CloudEvents];

/// What a channel needs to send one notice.
pub struct Sending<'a> {
    pub settings: &'a NotificationSettings,
    pub http: &'a reqwest::Client,
    pub now: UnixMillis,
}

/// One way notices reach operators.
pub trait Channel: Send + Sync + 'static {
    /// The name notices are queued under (kept in the store: never change it).
    fn name(&self) -> &'static str;
    /// Whether the settings turn this channel on.
    fn configured(&self, settings: &NotificationSettings) -> bool;
    /// Whether notices of `kind` go out on this channel (key events that are not notices go to
    /// CloudEvents only).
    fn wants(&self, kind: &str) -> bool {
        !cloudevents::EVENT_ONLY_KINDS.contains(&kind)
    }
    /// Checks this channel's settings (when configured), before any port is bound.
    fn validate(&self, settings: &NotificationSettings) -> Result<(), String>;
    /// Sends one notice; the error says why, without secrets (it is stored and logged).
    fn send<'a>(
        &'a self,
        sending: &'a Sending<'a>,
        notice: &'a Notice,
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// `[notifications]` in the config file. `Debug` shows no password, secret or webhook path.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
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
    /// Where key events go as CloudEvents 1.0 (signed with `webhook_secret`).
    pub cloudevents_url: Option<String>,
    /// First retry delay in seconds (doubles per attempt, at most an hour); default 30.
    pub retry_base_secs: Option<u64>,
}

impl std::fmt::Debug for NotificationSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |set: &Option<String>| set.as_ref().map(|_| "[redacted]");
        f.debug_struct("NotificationSettings")
            .field("email_to", &self.email_to)
            .field("email_from", &self.email_from)
            .field("smtp_host", &self.smtp_host)
            .field("smtp_port", &self.smtp_port)
            .field("smtp_security", &self.smtp_security)
            .field("smtp_username", &self.smtp_username)
            .field("smtp_password", &redacted(&self.smtp_password))
            .field("webhook_url", &self.webhook_url.as_deref().map(url_origin))
            .field("webhook_secret", &redacted(&self.webhook_secret))
            .field(
                "cloudevents_url",
                &self.cloudevents_url.as_deref().map(url_origin),
            )
            .field("retry_base_secs", &self.retry_base_secs)
            .finish()
    }
}

/// A webhook URL's scheme and host only: chat webhooks carry their secret in the path.
fn url_origin(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(url) => format!(
            "{}://{}/[redacted]",
            url.scheme(),
            url.host_str().unwrap_or_default()
        ),
        Err(_) => "[redacted]".into(),
    }
}

impl NotificationSettings {
    pub fn validate(&self) -> Result<(), String> {
        CHANNELS
            .iter()
            .filter(|c| c.configured(self))
            .try_for_each(|c| c.validate(self))
    }

    /// The configured channels that take notices of `kind`.
    pub fn channels_for(&self, kind: &str) -> Vec<&'static str> {
        CHANNELS
            .iter()
            .filter(|c| c.configured(self) && c.wants(kind))
            .map(|c| c.name())
            .collect()
    }

    /// The configured channels' names.
    pub fn channels(&self) -> Vec<&'static str> {
        CHANNELS
            .iter()
            .filter(|c| c.configured(self))
            .map(|c| c.name())
            .collect()
    }

    fn retry_base(&self) -> Duration {
        Duration::from_secs(self.retry_base_secs.unwrap_or(30).max(1))
    }
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
    let sending = Sending {
        settings,
        http,
        now,
    };
    for notice in due {
        let result = match CHANNELS.iter().find(|c| c.name() == notice.channel) {
            Some(channel) => channel.send(&sending, &notice).await,
            None => Err(format!("unknown channel {}", notice.channel)),
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

    #[test]
    fn debug_shows_no_password_secret_or_webhook_path() {
        let settings = NotificationSettings {
            email_to: vec!["ops@example.com".into()],
            smtp_host: Some("smtp.example.com".into()),
            smtp_username: Some("hubbub".into()),
            smtp_password: Some("smtp-password-value".into()),
            webhook_url: Some("https://hooks.example.com/services/T0/B0/path-token".into()),
            webhook_secret: Some("webhook-secret-value".into()),
            ..Default::default()
        };
        for text in [format!("{settings:?}"), format!("{settings:#?}")] {
            for secret in ["smtp-password-value", "webhook-secret-value", "path-token"] {
                assert!(!text.contains(secret), "{secret} in {text}");
            }
            assert!(text.contains("smtp.example.com"), "{text}");
            assert!(
                text.contains("https://hooks.example.com/[redacted]"),
                "{text}"
            );
        }
        let unset = format!("{:?}", NotificationSettings::default());
        assert!(unset.contains("smtp_password: None"), "{unset}");
    }
}
