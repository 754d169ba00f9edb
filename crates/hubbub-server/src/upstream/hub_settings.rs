//! Per-hub settings: the ordered event handlers, the anonymous-connect policy and the keep-alive
//! interval, in the shape of the ARM `hubs` resource. Stored durably; read lock-free.

use crate::store::{Store, StoreError};
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// System events a handler can subscribe to.
/// The system events a handler may take: the connection's, and the group presence events
/// (`joined`, `left`).
pub const SYSTEM_EVENTS: [&str; 5] = ["connect", "connected", "disconnected", "joined", "left"];

/// `properties` of a hub, as ARM and `az webpubsub hub` name them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HubProperties {
    #[serde(default, alias = "event_handlers")]
    pub event_handlers: Vec<EventHandler>,
    #[serde(default, alias = "anonymous_connect_policy")]
    pub anonymous_connect_policy: AnonymousConnectPolicy,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "keep_alive_secs"
    )]
    pub web_socket_keep_alive_interval_in_seconds: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AnonymousConnectPolicy {
    Allow,
    #[default]
    Deny,
}

impl<'de> Deserialize<'de> for AnonymousConnectPolicy {
    /// `allow` or `deny`, case-insensitive (ARM accepts either case).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.to_ascii_lowercase().as_str() {
            "allow" => Ok(Self::Allow),
            "deny" => Ok(Self::Deny),
            _ => Err(serde::de::Error::custom(format!(
                "anonymousConnectPolicy must be allow or deny, not '{text}'"
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventHandler {
    /// `http(s)://host/path?query` with optional `{hub}` and `{event}` (not in the host).
    #[serde(alias = "url_template")]
    pub url_template: String,
    /// `*`, a comma-separated list of event names, or one name; none means no user events.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "user_event_pattern"
    )]
    pub user_event_pattern: Option<String>,
    #[serde(default, alias = "system_events")]
    pub system_events: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

impl EventHandler {
    pub fn validate(&self) -> Result<(), SettingsError> {
        let probe = self
            .url_template
            .replace("{hub}", "hub")
            .replace("{event}", "event");
        let rest = probe
            .strip_prefix("http://")
            .or_else(|| probe.strip_prefix("https://"))
            .ok_or_else(|| {
                SettingsError(format!(
                    "urlTemplate '{}' must start with http:// or https://",
                    self.url_template
                ))
            })?;
        let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let template_rest =
            &self.url_template[self.url_template.find("://").map_or(0, |i| i + 3)..];
        let template_host = &template_rest[..template_rest
            .find(['/', '?', '#'])
            .unwrap_or(template_rest.len())];
        if host_end == 0 || template_host.contains('{') {
            return Err(SettingsError(format!(
                "urlTemplate '{}' needs a host, and {{hub}}/{{event}} may not appear in it",
                self.url_template
            )));
        }
        for event in &self.system_events {
            if !SYSTEM_EVENTS.contains(&event.to_ascii_lowercase().as_str()) {
                return Err(SettingsError(format!(
                    "system event '{event}' is not one of connect, connected, disconnected, joined, left"
                )));
            }
        }
        if let Some(pattern) = &self.user_event_pattern {
            let names: Vec<&str> = pattern.split(',').map(str::trim).collect();
            if names
                .iter()
                .any(|n| n.is_empty() || (n.contains('*') && *n != "*"))
            {
                return Err(SettingsError(format!(
                    "userEventPattern '{pattern}' must be '*', one event name, or a comma-separated list of names"
                )));
            }
        }
        Ok(())
    }

    /// Whether this handler takes the user event `event`.
    pub fn takes_user_event(&self, event: &str) -> bool {
        self.user_event_pattern
            .as_deref()
            .is_some_and(|p| p.split(',').map(str::trim).any(|n| n == "*" || n == event))
    }

    /// Whether this handler takes the system event `event` (connect, connected, disconnected).
    pub fn takes_system_event(&self, event: &str) -> bool {
        self.system_events
            .iter()
            .any(|e| e.eq_ignore_ascii_case(event))
    }

    /// The URL for one event of one hub: `{hub}` and `{event}` are percent-encoded as path
    /// segments (every byte but letters, digits, `-`, `.`, `_` and `~`), so a name can never add
    /// a segment, a query or a fragment; `.` and `..` are refused as event names before this.
    pub fn url(&self, hub: &str, event: &str) -> String {
        self.url_template
            .replace("{hub}", &path_segment(hub))
            .replace("{event}", &path_segment(event))
    }
}

/// `text` percent-encoded for one URL path segment.
fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl HubProperties {
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.event_handlers.len() > 64 {
            return Err(SettingsError(
                "a hub may have at most 64 event handlers".into(),
            ));
        }
        for handler in &self.event_handlers {
            handler.validate()?;
        }
        if let Some(secs) = self.web_socket_keep_alive_interval_in_seconds {
            if !(1..=120).contains(&secs) {
                return Err(SettingsError(format!(
                    "webSocketKeepAliveIntervalInSeconds must be 1-120, not {secs}"
                )));
            }
        }
        Ok(())
    }

    /// The first handler, in order, that takes a system event.
    pub fn system_handler(&self, event: &str) -> Option<&EventHandler> {
        self.event_handlers
            .iter()
            .find(|h| h.takes_system_event(event))
    }

    /// The first handler, in order, that takes a user event.
    pub fn user_handler(&self, event: &str) -> Option<&EventHandler> {
        self.event_handlers
            .iter()
            .find(|h| h.takes_user_event(event))
    }
}

/// Every hub's settings: lock-free reads, durable writes.
pub struct HubSettings {
    current: ArcSwap<BTreeMap<String, Arc<HubProperties>>>,
    store: Arc<Store>,
    write: Mutex<()>,
}

impl std::fmt::Debug for HubSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubSettings").finish_non_exhaustive()
    }
}

impl HubSettings {
    pub fn load(store: Arc<Store>) -> Result<Self, StoreError> {
        let map = store
            .hub_settings()?
            .into_iter()
            .filter_map(|(hub, json)| match serde_json::from_str::<HubProperties>(&json) {
                Ok(p) => Some((hub, Arc::new(p))),
                Err(e) => {
                    tracing::error!(%hub, error = %e, "stored hub settings do not parse; ignoring them");
                    None
                }
            })
            .collect();
        Ok(Self {
            current: ArcSwap::from_pointee(map),
            store,
            write: Mutex::new(()),
        })
    }

    /// The settings of a hub (defaults when none were set).
    pub fn get(&self, hub: &str) -> Arc<HubProperties> {
        self.current.load().get(hub).cloned().unwrap_or_default()
    }

    pub fn find(&self, hub: &str) -> Option<Arc<HubProperties>> {
        self.current.load().get(hub).cloned()
    }

    pub fn all(&self) -> BTreeMap<String, Arc<HubProperties>> {
        (**self.current.load()).clone()
    }

    /// Creates or replaces a hub's settings, durably, then makes them current. Blocking.
    pub fn put(&self, hub: &str, properties: HubProperties, now: i64) -> Result<(), StoreError> {
        let _write = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let json = serde_json::to_string(&properties).unwrap_or_default();
        self.store.put_hub_settings(hub, &json, now)?;
        let mut map = (**self.current.load()).clone();
        map.insert(hub.to_string(), Arc::new(properties));
        self.current.store(Arc::new(map));
        Ok(())
    }

    /// Deletes a hub's settings; false when there were none. Blocking.
    pub fn delete(&self, hub: &str) -> Result<bool, StoreError> {
        let _write = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let existed = self.store.delete_hub_settings(hub)?;
        let mut map = (**self.current.load()).clone();
        map.remove(hub);
        self.current.store(Arc::new(map));
        Ok(existed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handler(url: &str, pattern: Option<&str>, system: &[&str]) -> EventHandler {
        EventHandler {
            url_template: url.into(),
            user_event_pattern: pattern.map(Into::into),
            system_events: system.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn validation() {
        assert!(
            handler("http://h/api/{hub}/{event}", Some("*"), &["connect"])
                .validate()
                .is_ok()
        );
        assert!(handler("https://h:8443/x?code=abc", Some("a,b"), &[])
            .validate()
            .is_ok());
        assert!(handler("ftp://h", None, &[]).validate().is_err());
        assert!(handler("http://{hub}.example.com/", None, &[])
            .validate()
            .is_err());
        assert!(handler("http://h/", None, &["connecting"])
            .validate()
            .is_err());
        assert!(handler("http://h/", Some("a*"), &[]).validate().is_err());
        assert!(handler("http:///path", None, &[]).validate().is_err());
    }

    #[test]
    fn first_matching_handler_wins() {
        let p = HubProperties {
            event_handlers: vec![
                handler("http://a/{event}", Some("chat,typing"), &["connected"]),
                handler(
                    "http://b/{event}",
                    Some("*"),
                    &["connect", "connected", "disconnected"],
                ),
            ],
            ..Default::default()
        };
        assert_eq!(
            p.user_handler("chat").unwrap().url("h", "chat"),
            "http://a/chat"
        );
        assert_eq!(
            p.user_handler("other").unwrap().url("h", "other"),
            "http://b/other"
        );
        assert_eq!(
            p.system_handler("connected").unwrap().url("h", "connected"),
            "http://a/connected"
        );
        assert_eq!(
            p.system_handler("Connect").unwrap().url("h", "connect"),
            "http://b/connect"
        );
        let none = HubProperties::default();
        assert!(none.user_handler("x").is_none());
    }

    #[test]
    fn arm_shape_round_trips() {
        let json = r#"{"eventHandlers":[{"urlTemplate":"http://h/{event}","userEventPattern":"*","systemEvents":["connect"]}],"anonymousConnectPolicy":"allow"}"#;
        let p: HubProperties = serde_json::from_str(json).unwrap();
        assert_eq!(p.anonymous_connect_policy, AnonymousConnectPolicy::Allow);
        assert_eq!(serde_json::to_string(&p).unwrap(), json);
    }

    #[test]
    fn settings_persist() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        store.load_or_init(0).unwrap();
        let settings = HubSettings::load(Arc::clone(&store)).unwrap();
        let p = HubProperties {
            anonymous_connect_policy: AnonymousConnectPolicy::Allow,
            ..Default::default()
        };
        settings.put("chat", p.clone(), 1).unwrap();
        let again = HubSettings::load(Arc::clone(&store)).unwrap();
        assert_eq!(*again.get("chat"), p);
        assert!(again.delete("chat").unwrap());
        assert!(!again.delete("chat").unwrap());
        assert!(HubSettings::load(store).unwrap().find("chat").is_none());
    }
}
