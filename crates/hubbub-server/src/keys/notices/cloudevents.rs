//! Key events as CloudEvents 1.0 in structured JSON mode (`application/cloudevents+json`), POSTed
//! to `cloudevents_url` and signed like the webhook notices (`X-Hubbub-Signature` over
//! `"<timestamp>.<body>"` with the webhook secret). Every key notice goes out this way, and so do
//! the key events that are not notices (a key regenerated or revoked, a rotation step, the first
//! stale caller of a key version). `data` is shaped after Event Grid's Key Vault events: the key
//! (`objectType`, `objectName`, `version`) and, where they apply, the deadline and the reason.

use super::webhook::Signed;
use super::{Channel, NotificationSettings, Sending};
use crate::clock::rfc3339;
use crate::store::Notice;
use futures_util::future::BoxFuture;

#[derive(Debug)]
pub struct CloudEvents;

/// Notice kinds that are key events only: they go to CloudEvents, not to email or the webhook.
pub const EVENT_ONLY_KINDS: [&str; 4] = [
    "key_regenerated",
    "key_revoked",
    "rotation_step",
    "first_stale_caller",
];

/// The CloudEvents `type` of a notice kind.
pub fn event_type(kind: &str) -> String {
    let name = match kind {
        "key_regenerated" => "KeyRegenerated",
        "key_revoked" => "KeyRevoked",
        "rotation_required" => "RotationRequired",
        "rotation_deadline_near" => "RotationDeadlineNear",
        "key_disabled" => "KeyDisabled",
        "key_age_warning" => "KeyNearExpiry",
        "key_age_due" => "KeyExpired",
        "rotation_step" => "RotationStepDone",
        "rotation_postponed" => "RotationStepPostponed",
        "sink_failed" => "SinkFailed",
        "first_stale_caller" => "StaleCallerDetected",
        other => return format!("Hubbub.Keys.{other}"),
    };
    format!("Hubbub.Keys.{name}")
}

/// The structured-mode CloudEvent for a notice.
pub fn event(notice: &Notice) -> serde_json::Value {
    let payload: serde_json::Value = serde_json::from_str(&notice.payload).unwrap_or_default();
    let endpoint = payload["endpoint"].as_str().unwrap_or_default().to_string();
    let slot = payload["slot"].as_str().unwrap_or_default().to_string();
    let mut data = serde_json::json!({
        "objectType": "AccessKey",
        "objectName": slot,
        "keyType": slot,
        "version": payload["keyVersion"],
        "endpoint": endpoint,
    });
    if let (Some(data), Some(extra)) = (data.as_object_mut(), payload.as_object()) {
        for (name, value) in extra {
            if !matches!(name.as_str(), "type" | "slot" | "keyVersion" | "endpoint") {
                data.insert(name.clone(), value.clone());
            }
        }
    }
    serde_json::json!({
        "specversion": "1.0",
        "type": event_type(&notice.kind),
        "source": format!("{endpoint}/keys"),
        "id": notice.dedup,
        "time": rfc3339(notice.created_at),
        "subject": slot,
        "datacontenttype": "application/json",
        "data": data,
    })
}

impl Channel for CloudEvents {
    fn name(&self) -> &'static str {
        "cloudevents"
    }

    fn configured(&self, settings: &NotificationSettings) -> bool {
        settings.cloudevents_url.is_some()
    }

    fn wants(&self, _kind: &str) -> bool {
        true
    }

    fn validate(&self, settings: &NotificationSettings) -> Result<(), String> {
        let url = settings.cloudevents_url.as_deref().unwrap_or_default();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err("cloudevents_url must be an http(s) URL".into());
        }
        if settings
            .webhook_secret
            .as_deref()
            .is_none_or(|s| s.len() < 16)
        {
            return Err(
                "cloudevents_url needs a webhook_secret of at least 16 characters to sign with"
                    .into(),
            );
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

async fn send(sending: &Sending<'_>, notice: &Notice) -> Result<(), String> {
    let settings = sending.settings;
    let signed = Signed {
        url: settings
            .cloudevents_url
            .as_deref()
            .ok_or("no cloudevents_url")?,
        secret: settings.webhook_secret.as_deref().unwrap_or_default(),
        content_type: "application/cloudevents+json; charset=utf-8",
        body: event(notice).to_string(),
        timestamp: sending.now / 1000,
        what: "the CloudEvents endpoint",
    };
    signed.post(sending.http).await
}
