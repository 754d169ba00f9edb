//! Settings from a TOML file, the environment and flags (in rising precedence), validated into a
//! [`Config`] before any port is bound.

use crate::clock::{SharedClock, SystemClock};
use hubbub_proto::audience::PublicEndpoint;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_DATA_DIR: &str = "./hubbub-data";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8081";
/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const DEFAULT_TOKEN_LEEWAY_SECS: i64 = 300;
/// WebSocket ping interval, as the service's default.
pub const DEFAULT_KEEP_ALIVE_SECS: u64 = 20;
/// How long an event handler may take to answer.
pub const DEFAULT_EVENT_HANDLER_TIMEOUT_SECS: u64 = 20;
/// How long a dropped reliable session is kept (clients give up after 30 s).
pub const DEFAULT_RECONNECT_GRACE_SECS: u64 = 60;
/// How long a connection may take to send complete request headers.
pub const DEFAULT_HTTP_HEADER_TIMEOUT_SECS: u64 = 10;
/// How long an HTTP keep-alive connection may sit idle between requests.
pub const DEFAULT_HTTP_IDLE_TIMEOUT_SECS: u64 = 60;
/// Days an earlier key value stays recognised (its callers listed as stale) after it was replaced.
pub const DEFAULT_STALE_KEY_WINDOW_DAYS: u32 = 30;
/// Open connections (WebSockets included) the public listener accepts.
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;

/// Raw settings, every field optional: what one source (file, environment, flags) says.
/// `Debug` shows no NATS user or password and no notification secret.
#[derive(Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Settings {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    /// Every public URL clients and app servers use; the first one goes into connection strings.
    pub public_endpoint: Option<Vec<String>>,
    /// Proxies (addresses or CIDR ranges) whose `X-Forwarded-For` names the client's address.
    pub trusted_proxies: Option<Vec<String>>,
    /// Directories a rotation policy's file sinks may write in (default: `<data dir>/sinks`).
    pub sink_dirs: Option<Vec<PathBuf>>,
    /// Whether a rotation policy may run commands as sinks (default: false).
    pub allow_exec_sinks: Option<bool>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Clock skew tolerated on token expiry and not-before, in seconds.
    pub token_leeway_secs: Option<i64>,
    /// WebSocket keep-alive ping interval, in seconds (1-120).
    pub keep_alive_secs: Option<u64>,
    /// How long a dropped reliable session can be resumed, in seconds (30-3600).
    pub reconnect_grace_secs: Option<u64>,
    /// How log lines are written: `text` (the default) or `json` (one object per line).
    pub log_format: Option<String>,
    /// How long an event handler may take to answer, in seconds (1-300).
    pub event_handler_timeout_secs: Option<u64>,
    /// Time a connection gets to send complete request headers, in seconds (1-300).
    pub http_header_timeout_secs: Option<u64>,
    /// Time an HTTP keep-alive connection may sit idle between requests, in seconds (1-3600).
    pub http_idle_timeout_secs: Option<u64>,
    /// Open connections the public listener accepts, WebSockets included (1-1,000,000).
    pub max_connections: Option<usize>,
    /// Groups one client connection may be in (1-100,000).
    pub max_groups_per_connection: Option<usize>,
    /// Connections one user id may have open in one hub on this node (1-1,000,000).
    pub max_connections_per_user: Option<usize>,
    /// User events one connection may have waiting for the event handler (1-10,000).
    pub event_queue_per_connection: Option<usize>,
    /// Un-acknowledged messages a reliable connection may have (1-100,000).
    pub reliable_buffer_messages: Option<usize>,
    /// Un-acknowledged bytes a reliable connection may have (64 KiB-1 GiB).
    pub reliable_buffer_bytes: Option<usize>,
    /// Key age policy: keys older than this many days are due for rotation (off by default).
    pub key_max_age_days: Option<u32>,
    /// How long an earlier key value is recognised after it was replaced, in days (1-3650):
    /// tokens it signed are refused with a message naming the key, and their callers listed.
    pub stale_key_window_days: Option<u32>,
    /// How often key housekeeping runs, in milliseconds (tests shorten it).
    pub maintenance_interval_ms: Option<u64>,
    /// Where notices about keys go (email, webhook).
    pub notifications: Option<crate::keys::notices::NotificationSettings>,
    /// Hubs declared by the deployment: their settings are applied at every start.
    pub hubs:
        Option<std::collections::BTreeMap<String, crate::upstream::hub_settings::HubProperties>>,
    /// Cluster mode: the NATS server URLs (`nats://host:4222`, `tls://...`) of the cluster to
    /// join. Unset: a single node with its embedded store.
    pub cluster: Option<Vec<String>>,
    /// A NATS credentials file (`.creds`: user JWT and NKey seed) for the cluster connection.
    pub cluster_creds: Option<PathBuf>,
    /// A PEM CA certificate to verify the NATS servers with; TLS is then required.
    pub cluster_tls_ca: Option<PathBuf>,
    /// A file holding the secret every node shares (kept outside NATS): it authenticates the
    /// messages between nodes and seals what they keep in NATS. Required in cluster mode.
    pub cluster_secret_file: Option<PathBuf>,
    /// Replicas of the cluster's key-value bucket and audit stream (1-5; default 1).
    pub cluster_replicas: Option<usize>,
    /// This node's id in the cluster, carried in its connection ids (default: random).
    pub node_id: Option<String>,
    /// Access keys stop authenticating REST calls and client tokens (`disableLocalAuth`); set at
    /// start, durably (turning it back on is an admin API call).
    pub disable_local_auth: Option<bool>,
    /// Identity providers whose tokens the REST and admin APIs accept (OpenID Connect issuer
    /// URLs, exactly as their tokens' `iss`; keys found through discovery).
    pub oidc_issuer: Option<Vec<String>>,
    /// Issuers whose keys are at an explicit JWKS URL: `ISSUER=JWKS_URL`.
    pub oidc_jwks: Option<Vec<String>>,
    /// Audiences identity-provider tokens must name (default `https://webpubsub.azure.com`).
    pub oidc_audience: Option<Vec<String>>,
    /// The claim roles are read from (default `roles`).
    pub oidc_role_claim: Option<String>,
    /// Role values granting every REST operation (default `Web PubSub Service Owner`).
    pub oidc_owner_role: Option<Vec<String>>,
    /// Role values granting the read-only REST operations (default `Web PubSub Service Reader`).
    pub oidc_reader_role: Option<Vec<String>>,
    /// Role values opening the admin API (default `Hubbub Administrator`).
    pub oidc_admin_role: Option<Vec<String>>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cluster = self.cluster.as_ref().map(|urls| {
            urls.iter()
                .flat_map(|u| u.split(','))
                .map(crate::backplane::nats::config::redact_url)
                .collect::<Vec<_>>()
        });
        f.debug_struct("Settings")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("admin_listen", &self.admin_listen)
            .field("public_endpoint", &self.public_endpoint)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("sink_dirs", &self.sink_dirs)
            .field("allow_exec_sinks", &self.allow_exec_sinks)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("token_leeway_secs", &self.token_leeway_secs)
            .field("keep_alive_secs", &self.keep_alive_secs)
            .field("reconnect_grace_secs", &self.reconnect_grace_secs)
            .field("log_format", &self.log_format)
            .field(
                "event_handler_timeout_secs",
                &self.event_handler_timeout_secs,
            )
            .field("http_header_timeout_secs", &self.http_header_timeout_secs)
            .field("http_idle_timeout_secs", &self.http_idle_timeout_secs)
            .field("max_connections", &self.max_connections)
            .field("max_groups_per_connection", &self.max_groups_per_connection)
            .field("max_connections_per_user", &self.max_connections_per_user)
            .field(
                "event_queue_per_connection",
                &self.event_queue_per_connection,
            )
            .field("reliable_buffer_messages", &self.reliable_buffer_messages)
            .field("reliable_buffer_bytes", &self.reliable_buffer_bytes)
            .field("key_max_age_days", &self.key_max_age_days)
            .field("stale_key_window_days", &self.stale_key_window_days)
            .field("maintenance_interval_ms", &self.maintenance_interval_ms)
            .field("notifications", &self.notifications)
            .field("hubs", &self.hubs)
            .field("cluster", &cluster)
            .field("cluster_creds", &self.cluster_creds)
            .field("cluster_tls_ca", &self.cluster_tls_ca)
            .field("cluster_secret_file", &self.cluster_secret_file)
            .field("cluster_replicas", &self.cluster_replicas)
            .field("node_id", &self.node_id)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{name} '{value}' is not a socket address like 127.0.0.1:8080")]
    BadAddress { name: &'static str, value: String },
    #[error("public endpoint: {0}")]
    BadEndpoint(#[from] hubbub_proto::audience::EndpointError),
    #[error("--tls-cert and --tls-key must be given together")]
    TlsHalf,
    #[error("token leeway must be between 0 and 3600 seconds, not {0}")]
    BadLeeway(i64),
    #[error("the event handler timeout must be between 1 and 300 seconds, not {0}")]
    BadHandlerTimeout(u64),
    #[error("the HTTP header timeout must be between 1 and 300 seconds, not {0}")]
    BadHeaderTimeout(u64),
    #[error("the HTTP idle timeout must be between 1 and 3600 seconds, not {0}")]
    BadIdleTimeout(u64),
    #[error("max_connections must be between 1 and 1000000, not {0}")]
    BadMaxConnections(usize),
    #[error("max_groups_per_connection must be between 1 and 100000, not {0}")]
    BadMaxGroups(usize),
    #[error("max_connections_per_user must be between 1 and 1000000, not {0}")]
    BadMaxPerUser(usize),
    #[error("{name} must be between {min} and {max}, not {value}")]
    OutOfRange {
        name: &'static str,
        min: usize,
        max: usize,
        value: usize,
    },
    #[error("[notifications]: {0}")]
    BadNotifications(String),
    #[error("key_max_age_days must be at least 1")]
    BadMaxAge,
    #[error("hub '{0}' in the config: {1}")]
    BadHub(String, String),
    #[error("keep-alive must be between 1 and 120 seconds, not {0}")]
    BadKeepAlive(u64),
    #[error("the reconnect grace period must be between 30 and 3600 seconds, not {0}")]
    BadGrace(u64),
    #[error("the public and admin listeners cannot share the address {0}")]
    SameAddress(SocketAddr),
    #[error("cluster: {0}")]
    BadCluster(String),
    #[error("{0}")]
    BadSetting(String),
}

/// `value` (or `default` when unset), if within `range`.
fn within(
    name: &'static str,
    value: Option<usize>,
    default: usize,
    range: std::ops::RangeInclusive<usize>,
) -> Result<usize, ConfigError> {
    let value = value.unwrap_or(default);
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::OutOfRange {
            name,
            min: *range.start(),
            max: *range.end(),
            value,
        })
    }
}

impl Settings {
    /// Reads a TOML config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })
    }

    /// `self` overrides `lower` field by field.
    pub fn over(self, lower: Settings) -> Settings {
        Settings {
            data_dir: self.data_dir.or(lower.data_dir),
            listen: self.listen.or(lower.listen),
            admin_listen: self.admin_listen.or(lower.admin_listen),
            public_endpoint: self.public_endpoint.or(lower.public_endpoint),
            trusted_proxies: self.trusted_proxies.or(lower.trusted_proxies),
            sink_dirs: self.sink_dirs.or(lower.sink_dirs),
            allow_exec_sinks: self.allow_exec_sinks.or(lower.allow_exec_sinks),
            tls_cert: self.tls_cert.or(lower.tls_cert),
            tls_key: self.tls_key.or(lower.tls_key),
            token_leeway_secs: self.token_leeway_secs.or(lower.token_leeway_secs),
            keep_alive_secs: self.keep_alive_secs.or(lower.keep_alive_secs),
            reconnect_grace_secs: self.reconnect_grace_secs.or(lower.reconnect_grace_secs),
            log_format: self.log_format.or(lower.log_format),
            event_handler_timeout_secs: self
                .event_handler_timeout_secs
                .or(lower.event_handler_timeout_secs),
            http_header_timeout_secs: self
                .http_header_timeout_secs
                .or(lower.http_header_timeout_secs),
            http_idle_timeout_secs: self.http_idle_timeout_secs.or(lower.http_idle_timeout_secs),
            max_connections: self.max_connections.or(lower.max_connections),
            max_groups_per_connection: self
                .max_groups_per_connection
                .or(lower.max_groups_per_connection),
            max_connections_per_user: self
                .max_connections_per_user
                .or(lower.max_connections_per_user),
            event_queue_per_connection: self
                .event_queue_per_connection
                .or(lower.event_queue_per_connection),
            reliable_buffer_messages: self
                .reliable_buffer_messages
                .or(lower.reliable_buffer_messages),
            reliable_buffer_bytes: self.reliable_buffer_bytes.or(lower.reliable_buffer_bytes),
            hubs: self.hubs.or(lower.hubs),
            key_max_age_days: self.key_max_age_days.or(lower.key_max_age_days),
            stale_key_window_days: self.stale_key_window_days.or(lower.stale_key_window_days),
            maintenance_interval_ms: self
                .maintenance_interval_ms
                .or(lower.maintenance_interval_ms),
            notifications: self.notifications.or(lower.notifications),
            cluster: self.cluster.or(lower.cluster),
            cluster_creds: self.cluster_creds.or(lower.cluster_creds),
            cluster_tls_ca: self.cluster_tls_ca.or(lower.cluster_tls_ca),
            cluster_secret_file: self.cluster_secret_file.or(lower.cluster_secret_file),
            cluster_replicas: self.cluster_replicas.or(lower.cluster_replicas),
            node_id: self.node_id.or(lower.node_id),
            disable_local_auth: self.disable_local_auth.or(lower.disable_local_auth),
            oidc_issuer: self.oidc_issuer.or(lower.oidc_issuer),
            oidc_jwks: self.oidc_jwks.or(lower.oidc_jwks),
            oidc_audience: self.oidc_audience.or(lower.oidc_audience),
            oidc_role_claim: self.oidc_role_claim.or(lower.oidc_role_claim),
            oidc_owner_role: self.oidc_owner_role.or(lower.oidc_owner_role),
            oidc_reader_role: self.oidc_reader_role.or(lower.oidc_reader_role),
            oidc_admin_role: self.oidc_admin_role.or(lower.oidc_admin_role),
        }
    }

    /// The identity-provider settings, when any issuer is configured.
    fn oidc(&self, leeway_secs: i64) -> Result<Option<crate::oidc::OidcSettings>, ConfigError> {
        use crate::oidc::{IssuerSettings, OidcSettings};
        let bad = |what: String| ConfigError::BadSetting(what);
        let url = |name: &str, value: &str| -> Result<String, ConfigError> {
            let parsed = url::Url::parse(value)
                .map_err(|e| bad(format!("{name}: '{value}' is not a URL: {e}")))?;
            if !matches!(parsed.scheme(), "https" | "http") {
                return Err(bad(format!("{name}: '{value}' must be an http(s) URL")));
            }
            Ok(value.to_string())
        };
        let mut issuers = Vec::new();
        for issuer in self.oidc_issuer.iter().flatten() {
            issuers.push(IssuerSettings {
                issuer: url("oidc_issuer", issuer)?,
                jwks_url: None,
            });
        }
        for pair in self.oidc_jwks.iter().flatten() {
            let (issuer, jwks) = pair
                .split_once('=')
                .ok_or_else(|| bad(format!("oidc_jwks: '{pair}' must be ISSUER=JWKS_URL")))?;
            let jwks_url = Some(url("oidc_jwks", jwks)?);
            match issuers.iter_mut().find(|i| i.issuer == issuer) {
                Some(known) => known.jwks_url = jwks_url,
                None => issuers.push(IssuerSettings {
                    issuer: url("oidc_jwks", issuer)?,
                    jwks_url,
                }),
            }
        }
        if issuers.is_empty() {
            return Ok(None);
        }
        let mut settings = OidcSettings::new(issuers);
        let list = |value: &Option<Vec<String>>, default: Vec<String>| match value {
            Some(values) if !values.is_empty() => values.clone(),
            _ => default,
        };
        settings.audiences = list(&self.oidc_audience, settings.audiences);
        settings.owner_roles = list(&self.oidc_owner_role, settings.owner_roles);
        settings.reader_roles = list(&self.oidc_reader_role, settings.reader_roles);
        settings.admin_roles = list(&self.oidc_admin_role, settings.admin_roles);
        if let Some(claim) = self.oidc_role_claim.clone().filter(|c| !c.is_empty()) {
            settings.role_claim = claim;
        }
        settings.leeway_secs = leeway_secs;
        Ok(Some(settings))
    }

    /// Applies defaults and checks everything that can be checked without binding a port.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let oidc = self.oidc(
            self.token_leeway_secs
                .unwrap_or(DEFAULT_TOKEN_LEEWAY_SECS)
                .clamp(0, 3600),
        )?;
        let address = |name: &'static str, value: Option<String>, default: &str| {
            let value = value.unwrap_or_else(|| default.to_string());
            value
                .trim()
                .parse::<SocketAddr>()
                .map_err(|_| ConfigError::BadAddress { name, value })
        };
        let listen = address("listen", self.listen, DEFAULT_LISTEN)?;
        let admin_listen = address("admin-listen", self.admin_listen, DEFAULT_ADMIN_LISTEN)?;
        if listen == admin_listen && listen.port() != 0 {
            return Err(ConfigError::SameAddress(listen));
        }
        let public_endpoints = self
            .public_endpoint
            .unwrap_or_default()
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(PublicEndpoint::parse)
            .collect::<Result<Vec<_>, _>>()?;
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => return Err(ConfigError::TlsHalf),
        };
        let token_leeway_secs = self.token_leeway_secs.unwrap_or(DEFAULT_TOKEN_LEEWAY_SECS);
        if !(0..=3600).contains(&token_leeway_secs) {
            return Err(ConfigError::BadLeeway(token_leeway_secs));
        }
        let keep_alive_secs = self.keep_alive_secs.unwrap_or(DEFAULT_KEEP_ALIVE_SECS);
        if !(1..=120).contains(&keep_alive_secs) {
            return Err(ConfigError::BadKeepAlive(keep_alive_secs));
        }
        let reconnect_grace_secs = self
            .reconnect_grace_secs
            .unwrap_or(DEFAULT_RECONNECT_GRACE_SECS);
        if !(30..=3600).contains(&reconnect_grace_secs) {
            return Err(ConfigError::BadGrace(reconnect_grace_secs));
        }
        let event_handler_timeout_secs = self
            .event_handler_timeout_secs
            .unwrap_or(DEFAULT_EVENT_HANDLER_TIMEOUT_SECS);
        if !(1..=300).contains(&event_handler_timeout_secs) {
            return Err(ConfigError::BadHandlerTimeout(event_handler_timeout_secs));
        }
        let http_header_timeout_secs = self
            .http_header_timeout_secs
            .unwrap_or(DEFAULT_HTTP_HEADER_TIMEOUT_SECS);
        if !(1..=300).contains(&http_header_timeout_secs) {
            return Err(ConfigError::BadHeaderTimeout(http_header_timeout_secs));
        }
        let http_idle_timeout_secs = self
            .http_idle_timeout_secs
            .unwrap_or(DEFAULT_HTTP_IDLE_TIMEOUT_SECS);
        if !(1..=3600).contains(&http_idle_timeout_secs) {
            return Err(ConfigError::BadIdleTimeout(http_idle_timeout_secs));
        }
        let max_connections = self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if !(1..=1_000_000).contains(&max_connections) {
            return Err(ConfigError::BadMaxConnections(max_connections));
        }
        let hub_limits = crate::dataplane::hub::HubLimits {
            groups_per_connection: self
                .max_groups_per_connection
                .unwrap_or(crate::dataplane::hub::DEFAULT_MAX_GROUPS_PER_CONNECTION),
            connections_per_user: self
                .max_connections_per_user
                .unwrap_or(crate::dataplane::hub::DEFAULT_MAX_CONNECTIONS_PER_USER),
            event_queue: within(
                "event_queue_per_connection",
                self.event_queue_per_connection,
                crate::dataplane::hub::DEFAULT_EVENT_QUEUE,
                1..=10_000,
            )?,
            reliable_buffer_messages: within(
                "reliable_buffer_messages",
                self.reliable_buffer_messages,
                crate::dataplane::connection::MAX_UNACKED_MESSAGES,
                1..=100_000,
            )?,
            reliable_buffer_bytes: within(
                "reliable_buffer_bytes",
                self.reliable_buffer_bytes,
                crate::dataplane::connection::MAX_UNACKED_BYTES,
                64 * 1024..=1024 * 1024 * 1024,
            )?,
        };
        if !(1..=100_000).contains(&hub_limits.groups_per_connection) {
            return Err(ConfigError::BadMaxGroups(hub_limits.groups_per_connection));
        }
        if !(1..=1_000_000).contains(&hub_limits.connections_per_user) {
            return Err(ConfigError::BadMaxPerUser(hub_limits.connections_per_user));
        }
        let mut hubs = Vec::new();
        for (name, properties) in self.hubs.unwrap_or_default() {
            crate::api::validate_hub(&name)
                .map_err(|e| ConfigError::BadHub(name.clone(), e.message))?;
            properties
                .validate()
                .map_err(|e| ConfigError::BadHub(name.clone(), e.0))?;
            hubs.push((crate::dataplane::hub::canonical_hub(&name), properties));
        }
        if self.key_max_age_days == Some(0) {
            return Err(ConfigError::BadMaxAge);
        }
        let maintenance_interval = self
            .maintenance_interval_ms
            .map_or(crate::keys::lifecycle::TICK, |ms| {
                Duration::from_millis(ms.clamp(10, 60_000))
            });
        let cluster = crate::backplane::nats::ClusterConfig::from_settings(
            self.cluster,
            self.cluster_creds,
            self.cluster_tls_ca,
            self.cluster_secret_file,
            self.cluster_replicas,
            self.node_id,
        )
        .map_err(ConfigError::BadCluster)?;
        let notifications = self.notifications.unwrap_or_default();
        notifications
            .validate()
            .map_err(ConfigError::BadNotifications)?;
        Ok(Config {
            cluster,
            notifications,
            maintenance_interval,
            key_max_age_days: self.key_max_age_days,
            stale_key_window_days: within(
                "stale_key_window_days",
                self.stale_key_window_days.map(|d| d as usize),
                DEFAULT_STALE_KEY_WINDOW_DAYS as usize,
                1..=3650,
            )? as u32,
            event_handler_timeout: Duration::from_secs(event_handler_timeout_secs),
            http_header_timeout: Duration::from_secs(http_header_timeout_secs),
            http_idle_timeout: Duration::from_secs(http_idle_timeout_secs),
            max_connections,
            hub_limits,
            hubs,
            keep_alive: Duration::from_secs(keep_alive_secs),
            reconnect_grace: Duration::from_secs(reconnect_grace_secs),
            sink_rules: crate::keys::policy::SinkRules {
                dirs: self
                    .sink_dirs
                    .clone()
                    .unwrap_or_else(|| {
                        let data_dir = self
                            .data_dir
                            .clone()
                            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
                        vec![data_dir.join("sinks")]
                    })
                    .into_iter()
                    .map(|d| std::path::absolute(&d).unwrap_or(d))
                    .collect(),
                allow_exec: self.allow_exec_sinks.unwrap_or(false),
            },
            data_dir: self
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            listen,
            admin_listen,
            public_endpoints,
            trusted_proxies: crate::peer::TrustedProxies::parse(
                &self.trusted_proxies.unwrap_or_default(),
            )
            .map_err(|e| ConfigError::BadSetting(format!("trusted_proxies: {e}")))?,
            tls,
            oidc,
            disable_local_auth: self.disable_local_auth.unwrap_or(false),
            token_leeway_secs,
            clock: Arc::new(SystemClock),
        })
    }
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Validated configuration.
#[derive(Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Empty means "derive from the bound public address": `http(s)://localhost:<port>`.
    pub public_endpoints: Vec<PublicEndpoint>,
    pub trusted_proxies: crate::peer::TrustedProxies,
    pub sink_rules: crate::keys::policy::SinkRules,
    pub tls: Option<TlsFiles>,
    pub token_leeway_secs: i64,
    pub keep_alive: Duration,
    pub reconnect_grace: Duration,
    pub event_handler_timeout: Duration,
    /// Time a connection gets to send complete request headers (both listeners).
    pub http_header_timeout: Duration,
    /// Time an HTTP keep-alive connection may sit idle between requests (both listeners).
    pub http_idle_timeout: Duration,
    /// Open connections the public listener accepts (the admin listener's cap is fixed).
    pub max_connections: usize,
    /// Groups per connection and connections per user.
    pub hub_limits: crate::dataplane::hub::HubLimits,
    pub key_max_age_days: Option<u32>,
    /// Days an earlier key value stays recognised after it was replaced.
    pub stale_key_window_days: u32,
    pub maintenance_interval: Duration,
    pub notifications: crate::keys::notices::NotificationSettings,
    /// Hub settings declared in the config file, applied at start.
    pub hubs: Vec<(String, crate::upstream::hub_settings::HubProperties)>,
    /// Cluster mode (NATS JetStream), when configured.
    pub cluster: Option<crate::backplane::nats::ClusterConfig>,
    /// Identity providers whose tokens are accepted, when configured.
    pub oidc: Option<crate::oidc::OidcSettings>,
    /// Turn access keys off at start (`--disable-local-auth`).
    pub disable_local_auth: bool,
    pub clock: SharedClock,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("admin_listen", &self.admin_listen)
            .field("public_endpoints", &self.public_endpoints)
            .field("tls", &self.tls)
            .field("token_leeway_secs", &self.token_leeway_secs)
            .field("keep_alive", &self.keep_alive)
            .field("reconnect_grace", &self.reconnect_grace)
            .field("http_header_timeout", &self.http_header_timeout)
            .field("http_idle_timeout", &self.http_idle_timeout)
            .field("max_connections", &self.max_connections)
            .field("hub_limits", &self.hub_limits)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_providers_from_issuers_jwks_pairs_and_role_names() {
        let none = Settings::default().validate().unwrap();
        assert_eq!(none.oidc, None, "keys only unless an issuer is configured");
        let settings = Settings {
            oidc_issuer: Some(vec!["https://idp.example.com/realms/a".into()]),
            oidc_jwks: Some(vec![
                "https://idp.example.com/realms/a=https://idp.example.com/certs".into(),
                "https://other.example.com=https://other.example.com/keys".into(),
            ]),
            oidc_owner_role: Some(vec!["pubsub.owner".into()]),
            oidc_role_claim: Some("groups".into()),
            ..Settings::default()
        };
        let oidc = settings.validate().unwrap().oidc.unwrap();
        assert_eq!(
            oidc.issuers,
            vec![
                crate::oidc::IssuerSettings {
                    issuer: "https://idp.example.com/realms/a".into(),
                    jwks_url: Some("https://idp.example.com/certs".into()),
                },
                crate::oidc::IssuerSettings {
                    issuer: "https://other.example.com".into(),
                    jwks_url: Some("https://other.example.com/keys".into()),
                },
            ]
        );
        assert_eq!(oidc.owner_roles, vec!["pubsub.owner".to_string()]);
        assert_eq!(
            oidc.reader_roles,
            vec![crate::oidc::READER_ROLE.to_string()]
        );
        assert_eq!(
            oidc.audiences,
            vec![crate::oidc::DEFAULT_AUDIENCE.to_string()]
        );
        assert_eq!(oidc.role_claim, "groups");
        for bad in [
            Settings {
                oidc_issuer: Some(vec!["not a url".into()]),
                ..Settings::default()
            },
            Settings {
                oidc_issuer: Some(vec!["ftp://idp.example.com".into()]),
                ..Settings::default()
            },
            Settings {
                oidc_jwks: Some(vec!["https://idp.example.com".into()]),
                ..Settings::default()
            },
        ] {
            let e = bad.validate().unwrap_err().to_string();
            assert!(e.contains("oidc_"), "{e}");
        }
    }

    #[test]
    fn defaults() {
        let config = Settings::default().validate().unwrap();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.admin_listen.to_string(), DEFAULT_ADMIN_LISTEN);
        assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert!(config.public_endpoints.is_empty());
        assert_eq!(config.token_leeway_secs, 300);
        assert_eq!(config.http_header_timeout, Duration::from_secs(10));
        assert_eq!(config.http_idle_timeout, Duration::from_secs(60));
        assert_eq!(config.max_connections, 20_000);
    }

    #[test]
    fn flags_override_file_and_endpoints_split_on_commas() {
        let file: Settings = toml::from_str(
            r#"listen = "127.0.0.1:9000"
               admin_listen = "127.0.0.1:9001"
               public_endpoint = ["https://a.example.com"]"#,
        )
        .unwrap();
        let flags = Settings {
            listen: Some("127.0.0.1:7000".into()),
            public_endpoint: Some(vec!["http://b:1,http://c:2".into(), "http://d".into()]),
            ..Settings::default()
        };
        let config = flags.over(file).validate().unwrap();
        assert_eq!(config.listen.port(), 7000);
        assert_eq!(config.admin_listen.port(), 9001);
        let urls: Vec<_> = config.public_endpoints.iter().map(|e| e.url()).collect();
        assert_eq!(urls, ["http://b:1", "http://c:2", "http://d"]);
    }

    #[test]
    fn bad_settings_are_named() {
        let bad = |s: Settings| s.validate().unwrap_err().to_string();
        assert!(bad(Settings {
            listen: Some("localhost".into()),
            ..Default::default()
        })
        .contains("listen 'localhost'"));
        assert!(bad(Settings {
            tls_cert: Some("c.pem".into()),
            ..Default::default()
        })
        .contains("together"));
        assert!(bad(Settings {
            public_endpoint: Some(vec!["http://h/path".into()]),
            ..Default::default()
        })
        .contains("has a path"));
        assert!(bad(Settings {
            listen: Some("127.0.0.1:9".into()),
            admin_listen: Some("127.0.0.1:9".into()),
            ..Default::default()
        })
        .contains("cannot share"));
        assert!(bad(Settings {
            http_header_timeout_secs: Some(0),
            ..Default::default()
        })
        .contains("header timeout"));
        assert!(bad(Settings {
            http_idle_timeout_secs: Some(7200),
            ..Default::default()
        })
        .contains("idle timeout"));
        assert!(bad(Settings {
            max_connections: Some(0),
            ..Default::default()
        })
        .contains("max_connections"));
        let limits: Settings = toml::from_str(
            "http_header_timeout_secs = 5\nhttp_idle_timeout_secs = 30\nmax_connections = 100",
        )
        .unwrap();
        let config = limits.validate().unwrap();
        assert_eq!(config.http_header_timeout, Duration::from_secs(5));
        assert_eq!(config.http_idle_timeout, Duration::from_secs(30));
        assert_eq!(config.max_connections, 100);
        let err = toml::from_str::<Settings>("lisen = \"x\"").unwrap_err();
        assert!(err.message().contains("unknown field"));
    }

    #[test]
    fn debug_shows_no_nats_password_or_notification_secret() {
        let settings: Settings = toml::from_str(
            r#"cluster = ["nats://hubbub:nats-password@nats.example.com:4222"]
               [notifications]
               smtp_host = "smtp.example.com"
               smtp_password = "smtp-password-value"
               webhook_url = "https://hooks.example.com/x"
               webhook_secret = "webhook-secret-value""#,
        )
        .unwrap();
        let text = format!("{settings:?}");
        for secret in [
            "nats-password",
            "smtp-password-value",
            "webhook-secret-value",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("nats.example.com:4222"), "{text}");
    }
}
