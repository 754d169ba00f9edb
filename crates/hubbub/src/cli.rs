//! The command line: `hubbub serve`, `hubbub key show`, `hubbub key regenerate`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use hubbub_proto::keys::KeySlot;
use hubbub_server::Settings;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "hubbub",
    version,
    about = "A self-hosted, Azure Web PubSub-compatible real-time messaging service"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (creates keys and data directory on first start).
    Serve(Box<ServeArgs>),
    /// Show or regenerate the access keys of a running server.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Manage hub settings (event handlers, anonymous connections), like `az webpubsub hub`.
    #[command(subcommand)]
    Hub(HubCommand),
    /// The admin token of a running server.
    #[command(subcommand)]
    AdminToken(AdminTokenCommand),
    /// Print the audit log: every key event, who made it and from where.
    Audit {
        /// Only events at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Print JSON (one object per event) instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminTokenCommand {
    /// Replace the admin token with a new one: the old one stops working at once, portal
    /// sessions are signed out, and the data directory's admin-token file gets the new one.
    /// Prints the new token's file (and, with --print, the token) as JSON.
    Rotate {
        /// Also print the new token (for a server whose data directory is elsewhere).
        #[arg(long)]
        print: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum HubCommand {
    /// Create a hub's settings (fails if the hub already has settings).
    Create(HubArgs),
    /// Change a hub's settings: given event handlers replace the old ones.
    Update(HubArgs),
    /// Print a hub's settings as JSON.
    Show {
        #[arg(long)]
        hub_name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Print every hub's settings as JSON.
    List(AdminArgs),
    /// Delete a hub's settings.
    Delete {
        #[arg(long)]
        hub_name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Args)]
pub struct HubArgs {
    #[arg(long)]
    pub hub_name: String,
    /// An event handler: `url-template=URL [user-event-pattern=P] [system-event=connect ...]`.
    /// Repeat the option for several handlers, in the order they are tried (each
    /// `url-template=` starts a new handler).
    #[arg(long, num_args = 1.., action = clap::ArgAction::Append, value_name = "KEY=VALUE")]
    pub event_handler: Vec<String>,
    /// Accept connections without an access token.
    #[arg(long)]
    pub allow_anonymous: Option<bool>,
    /// WebSocket keep-alive interval for the hub, in seconds (1-120).
    #[arg(long)]
    pub keep_alive_secs: Option<u64>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `Debug` shows the settings as `Settings` does: no NATS user or password.
#[derive(Args)]
pub struct ServeArgs {
    /// TOML config file; flags and HUBBUB_* environment variables override it.
    #[arg(long, env = "HUBBUB_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where keys and state are stored [default: ./hubbub-data].
    #[arg(long, env = "HUBBUB_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Public listener (REST API and clients) [default: 127.0.0.1:8080]. Port 0 picks a free port.
    #[arg(long, env = "HUBBUB_LISTEN")]
    pub listen: Option<String>,
    /// Admin listener (admin API, key management) [default: 127.0.0.1:8081].
    #[arg(long, env = "HUBBUB_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// Public URL(s) clients and app servers use; repeatable or comma-separated. The first goes
    /// into connection strings [default: http://localhost:<public port>].
    #[arg(long, env = "HUBBUB_PUBLIC_ENDPOINT", value_delimiter = ',')]
    pub public_endpoint: Vec<String>,
    /// Proxies (addresses or CIDR ranges, comma-separated) whose X-Forwarded-For names the
    /// caller's address in the stale-callers list [default: none; the peer address is used].
    #[arg(long, env = "HUBBUB_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
    /// Directories a rotation policy's file sinks may write in, comma-separated
    /// [default: <data dir>/sinks].
    #[arg(long, env = "HUBBUB_SINK_DIRS", value_delimiter = ',')]
    pub sink_dirs: Vec<PathBuf>,
    /// Let a rotation policy run commands as sinks (they run as this process's user).
    #[arg(long, env = "HUBBUB_ALLOW_EXEC_SINKS")]
    pub allow_exec_sinks: bool,
    /// PEM certificate chain: serve HTTPS and WSS on the public listener.
    #[arg(long, env = "HUBBUB_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "HUBBUB_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Turn access keys off: REST calls and client tokens signed with them are refused (tokens
    /// from identity providers and from :generateToken still work). Durable; turned back on with
    /// PUT /admin/local-auth.
    #[arg(long, env = "HUBBUB_DISABLE_LOCAL_AUTH")]
    pub disable_local_auth: bool,
    /// An OpenID Connect issuer whose tokens the REST and admin APIs accept, exactly as its
    /// tokens' `iss` (repeatable; keys found through its discovery document).
    #[arg(long, env = "HUBBUB_OIDC_ISSUER", value_delimiter = ',')]
    pub oidc_issuer: Vec<String>,
    /// An issuer whose keys are at an explicit JWKS URL: ISSUER=JWKS_URL (repeatable).
    #[arg(long, env = "HUBBUB_OIDC_JWKS", value_delimiter = ',')]
    pub oidc_jwks: Vec<String>,
    /// An audience identity-provider tokens must name (repeatable)
    /// [default: https://webpubsub.azure.com].
    #[arg(long, env = "HUBBUB_OIDC_AUDIENCE", value_delimiter = ',')]
    pub oidc_audience: Vec<String>,
    /// The token claim roles are read from [default: roles].
    #[arg(long, env = "HUBBUB_OIDC_ROLE_CLAIM")]
    pub oidc_role_claim: Option<String>,
    /// A role value granting every REST operation (repeatable)
    /// [default: Web PubSub Service Owner].
    #[arg(long, env = "HUBBUB_OIDC_OWNER_ROLE", value_delimiter = ',')]
    pub oidc_owner_role: Vec<String>,
    /// A role value granting the read-only REST operations (repeatable)
    /// [default: Web PubSub Service Reader].
    #[arg(long, env = "HUBBUB_OIDC_READER_ROLE", value_delimiter = ',')]
    pub oidc_reader_role: Vec<String>,
    /// A role value opening the admin API (repeatable) [default: Hubbub Administrator].
    #[arg(long, env = "HUBBUB_OIDC_ADMIN_ROLE", value_delimiter = ',')]
    pub oidc_admin_role: Vec<String>,
    /// Clock skew tolerated on token expiry and not-before, in seconds [default: 300].
    #[arg(long, env = "HUBBUB_TOKEN_LEEWAY_SECS")]
    pub token_leeway_secs: Option<i64>,
    /// WebSocket keep-alive ping interval in seconds, 1-120 [default: 20].
    #[arg(long, env = "HUBBUB_KEEP_ALIVE_SECS")]
    pub keep_alive_secs: Option<u64>,
    /// How long a dropped reliable client session can be resumed, in seconds [default: 60].
    #[arg(long, env = "HUBBUB_RECONNECT_GRACE_SECS")]
    pub reconnect_grace_secs: Option<u64>,
    /// Log lines on stderr as text or as JSON objects, one per line [default: text].
    #[arg(long, env = "HUBBUB_LOG_FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    /// How long an event handler may take to answer, in seconds [default: 20].
    #[arg(long, env = "HUBBUB_EVENT_HANDLER_TIMEOUT_SECS")]
    pub event_handler_timeout_secs: Option<u64>,
    /// Time a connection gets to send complete request headers, in seconds (1-300); a slower
    /// one is closed (both listeners) [default: 10].
    #[arg(long, env = "HUBBUB_HTTP_HEADER_TIMEOUT_SECS")]
    pub http_header_timeout_secs: Option<u64>,
    /// Time an HTTP keep-alive connection may sit idle between requests, in seconds (1-3600);
    /// WebSockets are not affected (both listeners) [default: 60].
    #[arg(long, env = "HUBBUB_HTTP_IDLE_TIMEOUT_SECS")]
    pub http_idle_timeout_secs: Option<u64>,
    /// Open connections the public listener accepts, WebSockets included; further ones are
    /// refused with 503 [default: 20000].
    #[arg(long, env = "HUBBUB_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Groups one client connection may be in; a join beyond it is refused [default: 1000].
    #[arg(long, env = "HUBBUB_MAX_GROUPS_PER_CONNECTION")]
    pub max_groups_per_connection: Option<usize>,
    /// Connections one user id may have open in one hub on this node; a further one is refused
    /// with 429 [default: 1000].
    #[arg(long, env = "HUBBUB_MAX_CONNECTIONS_PER_USER")]
    pub max_connections_per_user: Option<usize>,
    /// User events one connection may have waiting for the event handler; a further one is
    /// refused (1-10000) [default: 64].
    #[arg(long, env = "HUBBUB_EVENT_QUEUE_PER_CONNECTION")]
    pub event_queue_per_connection: Option<usize>,
    /// Un-acknowledged messages a reliable connection may have before it is closed as too slow
    /// (1-100000) [default: 1000].
    #[arg(long, env = "HUBBUB_RELIABLE_BUFFER_MESSAGES")]
    pub reliable_buffer_messages: Option<usize>,
    /// Un-acknowledged bytes a reliable connection may have before it is closed as too slow
    /// (65536-1073741824) [default: 16777216].
    #[arg(long, env = "HUBBUB_RELIABLE_BUFFER_BYTES")]
    pub reliable_buffer_bytes: Option<usize>,
    /// Key age policy: access keys older than this many days are due for rotation [default: off].
    #[arg(long, env = "HUBBUB_KEY_MAX_AGE_DAYS")]
    pub key_max_age_days: Option<u32>,
    /// Days a regenerated key value stays recognised: tokens it signed are refused with a
    /// message naming the key, and their callers listed (`hubbub key stale-callers`), 1-3650
    /// [default: 30].
    #[arg(long, env = "HUBBUB_STALE_KEY_WINDOW_DAYS")]
    pub stale_key_window_days: Option<u32>,
    /// Cluster mode: the NATS JetStream server URL(s) to join, comma-separated
    /// (nats://host:4222 or tls://host:4222). Nodes joined to the same NATS share keys, hub
    /// messages and the audit log [default: a single node].
    #[arg(long, env = "HUBBUB_CLUSTER", value_delimiter = ',')]
    pub cluster: Vec<String>,
    /// NATS credentials file (.creds) for the cluster connection.
    #[arg(long, env = "HUBBUB_CLUSTER_CREDS")]
    pub cluster_creds: Option<PathBuf>,
    /// PEM CA certificate to verify the NATS servers with; TLS is then required.
    #[arg(long, env = "HUBBUB_CLUSTER_TLS_CA")]
    pub cluster_tls_ca: Option<PathBuf>,
    /// File with the secret every node shares, outside NATS (one line of at least 32
    /// characters, e.g. from `openssl rand -base64 32`): it authenticates messages between nodes
    /// and seals what they keep in NATS. Required with --cluster.
    #[arg(long, env = "HUBBUB_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Replicas of the cluster's key bucket and audit stream, 1-5 [default: 1].
    #[arg(long, env = "HUBBUB_CLUSTER_REPLICAS")]
    pub cluster_replicas: Option<usize>,
    /// This node's id in the cluster: 1-32 letters, digits or _ [default: random].
    #[arg(long, env = "HUBBUB_NODE_ID")]
    pub node_id: Option<String>,
}

impl std::fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeArgs")
            .field("config", &self.config)
            .field("settings", &self.settings())
            .finish()
    }
}

impl ServeArgs {
    /// Flags (and environment) as settings, to be laid over the config file.
    pub fn settings(&self) -> Settings {
        Settings {
            data_dir: self.data_dir.clone(),
            listen: self.listen.clone(),
            admin_listen: self.admin_listen.clone(),
            public_endpoint: (!self.public_endpoint.is_empty())
                .then(|| self.public_endpoint.clone()),
            trusted_proxies: (!self.trusted_proxies.is_empty())
                .then(|| self.trusted_proxies.clone()),
            sink_dirs: (!self.sink_dirs.is_empty()).then(|| self.sink_dirs.clone()),
            allow_exec_sinks: self.allow_exec_sinks.then_some(true),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            token_leeway_secs: self.token_leeway_secs,
            keep_alive_secs: self.keep_alive_secs,
            reconnect_grace_secs: self.reconnect_grace_secs,
            log_format: self.log_format.clone(),
            event_handler_timeout_secs: self.event_handler_timeout_secs,
            http_header_timeout_secs: self.http_header_timeout_secs,
            http_idle_timeout_secs: self.http_idle_timeout_secs,
            max_connections: self.max_connections,
            max_groups_per_connection: self.max_groups_per_connection,
            max_connections_per_user: self.max_connections_per_user,
            event_queue_per_connection: self.event_queue_per_connection,
            reliable_buffer_messages: self.reliable_buffer_messages,
            reliable_buffer_bytes: self.reliable_buffer_bytes,
            hubs: None,
            key_max_age_days: self.key_max_age_days,
            stale_key_window_days: self.stale_key_window_days,
            maintenance_interval_ms: None,
            notifications: None,
            cluster: (!self.cluster.is_empty()).then(|| self.cluster.clone()),
            cluster_creds: self.cluster_creds.clone(),
            cluster_tls_ca: self.cluster_tls_ca.clone(),
            cluster_secret_file: self.cluster_secret_file.clone(),
            cluster_replicas: self.cluster_replicas,
            node_id: self.node_id.clone(),
            disable_local_auth: self.disable_local_auth.then_some(true),
            oidc_issuer: (!self.oidc_issuer.is_empty()).then(|| self.oidc_issuer.clone()),
            oidc_jwks: (!self.oidc_jwks.is_empty()).then(|| self.oidc_jwks.clone()),
            oidc_audience: (!self.oidc_audience.is_empty()).then(|| self.oidc_audience.clone()),
            oidc_role_claim: self.oidc_role_claim.clone(),
            oidc_owner_role: (!self.oidc_owner_role.is_empty())
                .then(|| self.oidc_owner_role.clone()),
            oidc_reader_role: (!self.oidc_reader_role.is_empty())
                .then(|| self.oidc_reader_role.clone()),
            oidc_admin_role: (!self.oidc_admin_role.is_empty())
                .then(|| self.oidc_admin_role.clone()),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Print primaryKey, secondaryKey and both connection strings as JSON.
    Show(AdminArgs),
    /// Replace one key with a new random value and print the new key set.
    Regenerate {
        /// Which key to replace.
        #[arg(long, value_enum)]
        key_type: KeyType,
        /// Keep accepting the old value for verification this long (e.g. 15m, 2h); default none,
        /// as Azure does.
        #[arg(long)]
        grace: Option<String>,
        /// Do not ask for confirmation when the key was used recently.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show how much each access key was used: totals, the last hour, the last use.
    Usage(AdminArgs),
    /// Show who still signs tokens with a regenerated key value: key, version, kind, hub,
    /// source address, user agent, count, first and last seen.
    StaleCallers {
        /// Print the admin API's JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show the latest notices about keys (email, webhook) and how their delivery went.
    Notices(AdminArgs),
    /// Demand that a key be rotated by a deadline; after it the key stops authenticating.
    RequireRotation {
        #[arg(long, value_enum)]
        key_type: AccessKeyType,
        /// An RFC 3339 time (2026-12-01T00:00:00Z) or a duration from now (12h, 7d).
        #[arg(long)]
        by: String,
        /// Why, for the audit log and the notices.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// End the grace period of a key's earlier values now: they stop authenticating at once.
    EndGrace {
        #[arg(long, value_enum)]
        key_type: AccessKeyType,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Run one rotation step of the policy now: the standby key gets a new value and becomes
    /// active, and the sinks get its connection string.
    Rotate(AdminArgs),
    /// Set, show or clear the rotation policy (rotation with no human step).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Revoke a key after a leak: a new value now, no earlier value accepted any more, and with
    /// --disconnect every live connection whose token a value of this key signed is closed (on
    /// every node). Connections signed with the other key stay.
    Revoke {
        #[arg(long, value_enum)]
        key_type: KeyType,
        /// Also close the live connections whose token this key signed.
        #[arg(long)]
        disconnect: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Rotate on alternating keys every period; the sinks are written at once with the active
    /// connection string, and at every step.
    Set {
        /// The period between steps: 30d, 12h, 90m (at least 10s).
        #[arg(long)]
        every: String,
        /// Postpone a step while the standby key was used within this window (at most 60m), and
        /// send a notice naming its callers.
        #[arg(long)]
        only_if_idle: Option<String>,
        /// A file to hold the active connection string (replaced atomically, mode 0600); inside
        /// one of the server's sink_dirs. Repeatable.
        #[arg(long)]
        sink_file: Vec<String>,
        /// A shell command run with HUBBUB_CONNECTION_STRING and HUBBUB_KEY_TYPE set (the server
        /// needs allow_exec_sinks = true). Repeatable.
        #[arg(long)]
        sink_exec: Vec<String>,
        /// A URL to POST the active connection string to, signed like the notices. Repeatable.
        #[arg(long)]
        sink_webhook: Vec<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show the policy: the active key, the next step, the sinks and the last outcome.
    Show(AdminArgs),
    /// Remove the policy (the keys stay as they are).
    Clear(AdminArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AccessKeyType {
    Primary,
    Secondary,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KeyType {
    Primary,
    Secondary,
    Salt,
}

impl From<KeyType> for KeySlot {
    fn from(k: KeyType) -> Self {
        match k {
            KeyType::Primary => KeySlot::Primary,
            KeyType::Secondary => KeySlot::Secondary,
            KeyType::Salt => KeySlot::Salt,
        }
    }
}

/// How a CLI command reaches the running server. `Debug` hides the admin token.
#[derive(Clone, Args)]
pub struct AdminArgs {
    /// The admin listener's URL.
    #[arg(
        long,
        env = "HUBBUB_ADMIN_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    pub admin_url: String,
    /// The admin token [default: read from <data-dir>/admin-token].
    #[arg(long, env = "HUBBUB_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Data directory holding the admin token file.
    #[arg(long, env = "HUBBUB_DATA_DIR", default_value = "./hubbub-data")]
    pub data_dir: PathBuf,
}

impl std::fmt::Debug for AdminArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminArgs")
            .field("admin_url", &self.admin_url)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "[redacted]"),
            )
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_admin_token_or_nats_password() {
        let cli = Cli::parse_from([
            "hubbub",
            "key",
            "show",
            "--admin-token",
            "admin-token-value",
        ]);
        let text = format!("{cli:?}");
        assert!(!text.contains("admin-token-value"), "{text}");
        assert!(text.contains("[redacted]"), "{text}");
        let cli = Cli::parse_from([
            "hubbub",
            "serve",
            "--cluster",
            "nats://hubbub:nats-password@nats.example.com:4222",
        ]);
        let text = format!("{cli:?}");
        assert!(!text.contains("nats-password"), "{text}");
        assert!(text.contains("nats.example.com:4222"), "{text}");
    }
}
