//! Cluster settings, checked before anything starts (NATS URLs never printed with their user or
//! password), and this node's id: configured, or made at first start and kept in the data
//! directory.

use super::seal::ClusterSecret;
use super::ClusterError;
use std::path::PathBuf;
use std::sync::Arc;

/// Largest replica count of the bucket and the stream (a JetStream limit).
pub const MAX_REPLICAS: usize = 5;

/// Validated cluster settings.
#[derive(Clone)]
pub struct ClusterConfig {
    /// NATS server URLs, possibly with user:password (never printed).
    pub urls: Vec<String>,
    pub creds: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    /// Authenticates messages between nodes and seals what they keep in NATS.
    pub secret: Arc<ClusterSecret>,
    pub replicas: usize,
    /// Given in the settings; otherwise the one kept in the data directory (made at first start).
    pub node_id: Option<String>,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("urls", &self.redacted_urls())
            .field("creds", &self.creds)
            .field("tls_ca", &self.tls_ca)
            .field("secret", &self.secret)
            .field("replicas", &self.replicas)
            .field("node_id", &self.node_id)
            .finish()
    }
}

/// A URL without its user and password, for messages and logs.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if !url.username().is_empty() || url.password().is_some() {
                let _ = url.set_username("");
                let _ = url.set_password(None);
            }
            url.to_string().trim_end_matches('/').to_string()
        }
        Err(_) => "(not a URL)".into(),
    }
}

/// Node ids: 1 to 32 ASCII letters, digits or `_` (they go into NATS subjects and connection
/// ids, where `-` separates the node id from the rest).
pub fn valid_node_id(id: &str) -> bool {
    (1..=32).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The file in the data directory that keeps a node's generated id across restarts.
pub const NODE_ID_FILE: &str = "node-id";

/// The configured node id, or the one kept in `data_dir` (generated and written on first use),
/// so a restarted node keeps its id (and its usage counters are not counted twice).
pub fn node_id(
    configured: Option<&str>,
    data_dir: &std::path::Path,
) -> Result<String, ClusterError> {
    if let Some(id) = configured {
        return Ok(id.to_string());
    }
    let path = data_dir.join(NODE_ID_FILE);
    let file_error = |source| ClusterError::NodeIdFile {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) if valid_node_id(text.trim()) => return Ok(text.trim().to_string()),
        Ok(_) => {
            tracing::warn!(file = %path.display(), "the node id file is not valid; making a new id")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(file_error(e)),
    }
    let id = random_node_id();
    std::fs::write(&path, format!("{id}\n")).map_err(file_error)?;
    Ok(id)
}

/// A random 8-character node id (lower-case letters and digits).
pub fn random_node_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 8];
    if getrandom::getrandom(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes.copy_from_slice(&nanos.to_le_bytes()[..8]);
    }
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

impl ClusterConfig {
    /// Checks the cluster settings; `None` when no cluster URL is given (single-node mode).
    pub fn from_settings(
        urls: Option<Vec<String>>,
        creds: Option<PathBuf>,
        tls_ca: Option<PathBuf>,
        secret_file: Option<PathBuf>,
        replicas: Option<usize>,
        node_id: Option<String>,
    ) -> Result<Option<Self>, String> {
        let urls: Vec<String> = urls
            .unwrap_or_default()
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect();
        if urls.is_empty() {
            if creds.is_some()
                || tls_ca.is_some()
                || secret_file.is_some()
                || replicas.is_some()
                || node_id.is_some()
            {
                return Err(
                    "cluster_creds, cluster_tls_ca, cluster_secret_file, cluster_replicas and node_id need cluster (the NATS URLs)"
                        .into(),
                );
            }
            return Ok(None);
        }
        for raw in &urls {
            let url = url::Url::parse(raw)
                .map_err(|_| format!("'{}' is not a URL like nats://host:4222", redact_url(raw)))?;
            if !matches!(url.scheme(), "nats" | "tls") || url.host_str().is_none_or(str::is_empty) {
                return Err(format!(
                    "'{}' must be a nats://host:port or tls://host:port URL",
                    redact_url(raw)
                ));
            }
        }
        let replicas = replicas.unwrap_or(1);
        if !(1..=MAX_REPLICAS).contains(&replicas) {
            return Err(format!(
                "cluster_replicas must be between 1 and {MAX_REPLICAS}, not {replicas}"
            ));
        }
        if let Some(id) = node_id.as_deref().filter(|id| !valid_node_id(id)) {
            return Err(format!(
                "node id '{}' must have 1 to 32 letters, digits or _",
                id.chars().take(40).collect::<String>()
            ));
        }
        let Some(secret_file) = secret_file else {
            return Err("cluster mode needs cluster_secret_file: a file with a secret every node shares and NATS never sees (one line of at least 32 characters, e.g. `openssl rand -base64 32 > cluster.secret; chmod 600 cluster.secret`)".into());
        };
        let secret = Arc::new(ClusterSecret::from_file(&secret_file)?);
        Ok(Some(Self {
            urls,
            creds,
            tls_ca,
            secret,
            replicas,
            node_id,
        }))
    }

    pub fn redacted_urls(&self) -> String {
        self.urls
            .iter()
            .map(|u| redact_url(u))
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_and_urls_never_show_passwords() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("cluster.secret");
        std::fs::write(&secret, "a-cluster-secret-of-at-least-32-characters\n").unwrap();
        let secret = || Some(secret.clone());
        assert!(
            ClusterConfig::from_settings(None, None, None, None, None, None)
                .unwrap()
                .is_none()
        );
        let err = ClusterConfig::from_settings(None, None, None, None, Some(3), None).unwrap_err();
        assert!(err.contains("need cluster"), "{err}");
        let config = ClusterConfig::from_settings(
            Some(vec![
                "nats://a:4222, nats://alice:s3cret@b:4222".into(),
                "tls://c:4222".into(),
            ]),
            None,
            None,
            secret(),
            Some(3),
            Some("node_1".into()),
        )
        .unwrap()
        .unwrap();
        assert_eq!(config.urls.len(), 3);
        assert_eq!(config.node_id.as_deref(), Some("node_1"));
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("alice") && !shown.contains("32-char"),
            "{shown}"
        );
        let needs_secret = ClusterConfig::from_settings(
            Some(vec!["nats://h:1".into()]),
            None,
            None,
            None,
            None,
            None,
        )
        .unwrap_err();
        assert!(
            needs_secret.contains("cluster_secret_file"),
            "{needs_secret}"
        );
        let missing = dir.path().join("absent");
        let err = ClusterConfig::from_settings(
            Some(vec!["nats://h:1".into()]),
            None,
            None,
            Some(missing),
            None,
            None,
        )
        .unwrap_err();
        assert!(err.contains("cannot read the cluster secret file"), "{err}");
        let err = ClusterConfig::from_settings(
            Some(vec!["http://bob:pw@h:1".into()]),
            None,
            None,
            secret(),
            None,
            None,
        )
        .unwrap_err();
        assert!(err.contains("nats://") && !err.contains("pw"), "{err}");
        for bad in ["a-b", "", "a.b", "x>"] {
            assert!(ClusterConfig::from_settings(
                Some(vec!["nats://h:1".into()]),
                None,
                None,
                secret(),
                None,
                Some(bad.into())
            )
            .is_err());
        }
        assert!(ClusterConfig::from_settings(
            Some(vec!["nats://h:1".into()]),
            None,
            None,
            secret(),
            Some(6),
            None
        )
        .is_err());
    }

    #[test]
    fn random_node_ids_are_valid_differ_and_are_kept_in_the_data_dir() {
        let (a, b) = (random_node_id(), random_node_id());
        assert!(valid_node_id(&a) && valid_node_id(&b));
        assert_ne!(a, b);
        let dir = tempfile::tempdir().unwrap();
        let first = node_id(None, dir.path()).unwrap();
        assert_eq!(node_id(None, dir.path()).unwrap(), first, "kept");
        assert_eq!(node_id(Some("given"), dir.path()).unwrap(), "given");
    }
}
