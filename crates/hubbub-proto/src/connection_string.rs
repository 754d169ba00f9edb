//! Connection strings: `Endpoint=<url>;AccessKey=<key>;Version=1.0;`, parsed the way the SDKs parse them.

use std::fmt;

/// A parsed connection string. `Debug` never shows the access key.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionString {
    /// The endpoint URL exactly as written (with `Port=` applied when present).
    pub endpoint: String,
    /// The access key, used by every SDK as UTF-8 bytes (never base64-decoded).
    pub access_key: String,
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionString")
            .field("endpoint", &self.endpoint)
            .field("access_key", &"[redacted]")
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionStringError {
    #[error("the connection string has no Endpoint")]
    MissingEndpoint,
    #[error("the connection string has no AccessKey")]
    MissingAccessKey,
    #[error("the connection string's Port is not a number between 1 and 65535")]
    BadPort,
    #[error("the connection string's Endpoint is not an absolute http or https URL")]
    BadEndpoint,
}

impl ConnectionString {
    /// Emits the canonical form. Never emits `Port=`: the Python SDK appends it to an endpoint that
    /// already carries a port, which breaks the URL.
    pub fn render(endpoint: &str, access_key: &str) -> String {
        format!(
            "Endpoint={};AccessKey={};Version=1.0;",
            endpoint.trim_end_matches('/'),
            access_key
        )
    }

    /// Parses like the SDKs: `;`-separated, key names case-insensitive, each value split on its
    /// first `=`, the first occurrence of a key wins, `Version` ignored, `Port` replaces the port.
    pub fn parse(text: &str) -> Result<Self, ConnectionStringError> {
        let mut endpoint: Option<&str> = None;
        let mut access_key: Option<&str> = None;
        let mut port: Option<&str> = None;
        for segment in text.split(';') {
            let Some((name, value)) = segment.split_once('=') else {
                continue;
            };
            let slot = match name.trim().to_ascii_lowercase().as_str() {
                "endpoint" => &mut endpoint,
                "accesskey" => &mut access_key,
                "port" => &mut port,
                _ => continue,
            };
            slot.get_or_insert(value.trim());
        }
        let endpoint = endpoint
            .filter(|e| !e.is_empty())
            .ok_or(ConnectionStringError::MissingEndpoint)?;
        let access_key = access_key
            .filter(|k| !k.is_empty())
            .ok_or(ConnectionStringError::MissingAccessKey)?;
        let mut url = url::Url::parse(endpoint).map_err(|_| ConnectionStringError::BadEndpoint)?;
        if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
            return Err(ConnectionStringError::BadEndpoint);
        }
        if let Some(port) = port {
            let port: u16 = port.parse().map_err(|_| ConnectionStringError::BadPort)?;
            if port == 0 {
                return Err(ConnectionStringError::BadPort);
            }
            url.set_port(Some(port))
                .map_err(|_| ConnectionStringError::BadEndpoint)?;
        }
        Ok(Self {
            endpoint: url.as_str().trim_end_matches('/').to_string(),
            access_key: access_key.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_without_port_and_with_trailing_semicolon() {
        let text = ConnectionString::render("http://localhost:8080/", "abc=");
        assert_eq!(
            text,
            "Endpoint=http://localhost:8080;AccessKey=abc=;Version=1.0;"
        );
        assert!(!text.contains("Port="));
    }

    #[test]
    fn round_trips() {
        let text = ConnectionString::render("https://h.example:8443", "k/+=");
        let parsed = ConnectionString::parse(&text).unwrap();
        assert_eq!(parsed.endpoint, "https://h.example:8443");
        assert_eq!(parsed.access_key, "k/+=");
    }

    #[test]
    fn parses_like_the_sdks() {
        let parsed = ConnectionString::parse(
            "endpoint=http://LocalHost;accesskey=abc=def==;Port=27080;garbage;Version=1.0",
        )
        .unwrap();
        assert_eq!(parsed.endpoint, "http://localhost:27080");
        assert_eq!(parsed.access_key, "abc=def==");
        // The first occurrence wins (as in Python).
        let parsed =
            ConnectionString::parse("Endpoint=http://a;AccessKey=one;AccessKey=two").unwrap();
        assert_eq!(parsed.access_key, "one");
    }

    #[test]
    fn reports_what_is_missing() {
        assert_eq!(
            ConnectionString::parse("AccessKey=x"),
            Err(ConnectionStringError::MissingEndpoint)
        );
        assert_eq!(
            ConnectionString::parse("Endpoint=http://a;"),
            Err(ConnectionStringError::MissingAccessKey)
        );
        assert_eq!(
            ConnectionString::parse("Endpoint=http://a;AccessKey=k;Port=70000"),
            Err(ConnectionStringError::BadPort)
        );
        assert_eq!(
            ConnectionString::parse("Endpoint=ftp://a;AccessKey=k"),
            Err(ConnectionStringError::BadEndpoint)
        );
    }

    #[test]
    fn debug_hides_the_key() {
        let parsed = ConnectionString::parse("Endpoint=http://a;AccessKey=secret-value").unwrap();
        assert!(!format!("{parsed:?}").contains("secret-value"));
    }
}
