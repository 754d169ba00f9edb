//! Abuse protection: before the first event to a handler URL, an `OPTIONS` request with
//! `WebHook-Request-Origin`; the handler must allow this service's origin. The outcome is
//! remembered per URL (an hour when passed, seconds when failed).

use super::{describe, host_of, Upstream, Validation, VALIDATION_FAILED_TTL, VALIDATION_OK_TTL};
use crate::upstream::hub_settings::EventHandler;
use tokio::time::Instant;

impl Upstream {
    /// The abuse-protection handshake (OPTIONS), remembered per URL.
    pub(super) async fn validate(&self, handler: &EventHandler, hub: &str) -> Result<(), String> {
        let url = handler.url(hub, "validate");
        let cached = self
            .validations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&url)
            .cloned();
        match cached {
            Some(Validation::Passed(at)) if at.elapsed() < VALIDATION_OK_TTL => return Ok(()),
            Some(Validation::Failed(at, reason)) if at.elapsed() < VALIDATION_FAILED_TTL => {
                return Err(reason)
            }
            _ => {}
        }
        let result = self
            .handshake(&url)
            .await
            .map_err(|reason| format!("abuse protection failed: {reason}"));
        let entry = match &result {
            Ok(()) => Validation::Passed(Instant::now()),
            Err(reason) => {
                self.problem(handler, hub, &url, reason);
                Validation::Failed(Instant::now(), reason.clone())
            }
        };
        self.validations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(url, entry);
        result
    }

    async fn handshake(&self, url: &str) -> Result<(), String> {
        let limit = self.host_limit(url);
        let _permit = limit
            .acquire()
            .await
            .map_err(|_| "shutting down".to_string())?;
        let response = self
            .http
            .request(reqwest::Method::OPTIONS, url)
            .header("WebHook-Request-Origin", &self.origin)
            .header("ce-awpsversion", "1.0")
            .send()
            .await
            .map_err(|e| describe(&e))?;
        if !response.status().is_success() {
            return Err(format!(
                "the handler answered the OPTIONS request with {}",
                response.status().as_u16()
            ));
        }
        let allowed = response
            .headers()
            .get_all("WebHook-Allowed-Origin")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .any(|o| {
                o == "*"
                    || o.eq_ignore_ascii_case(&self.origin)
                    || host_of(o).split(':').next() == Some(self.origin.as_str())
            });
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "the handler's WebHook-Allowed-Origin does not allow '{}'",
                self.origin
            ))
        }
    }
}
