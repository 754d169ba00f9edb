//! Audience (`aud`) checks: a token names the URL it was minted for; it must name one of this
//! service's public hosts and the path of the request it arrived on.
//!
//! The rules accept every official SDK: the scheme is ignored (http, https, ws, wss), host and
//! port are compared case-insensitively against the configured public endpoints (never against the
//! `Host` header, which a reverse proxy may change), the query string and a trailing `/` are ignored,
//! and paths are compared case-insensitively after decoding percent-escapes, except the escapes of
//! `/`, `?`, `#` and `%`, which keep path segments apart.

use std::fmt;

/// One public endpoint of the service, for example `http://localhost:8080`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicEndpoint {
    scheme: String,
    host: String,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("'{0}' is not an absolute http or https URL")]
    NotHttpUrl(String),
    #[error("'{0}' has a path; a public endpoint is a scheme, a host and an optional port")]
    HasPath(String),
}

impl PublicEndpoint {
    pub fn parse(text: &str) -> Result<Self, EndpointError> {
        let parts = UrlParts::parse(text).ok_or_else(|| EndpointError::NotHttpUrl(text.into()))?;
        if !matches!(parts.scheme.as_str(), "http" | "https") || parts.host.is_empty() {
            return Err(EndpointError::NotHttpUrl(text.into()));
        }
        if !(parts.path.is_empty() || parts.path == "/") || parts.rest_after_path {
            return Err(EndpointError::HasPath(text.into()));
        }
        Ok(Self {
            scheme: parts.scheme,
            host: parts.host,
            port: parts.port,
        })
    }

    /// `http://localhost:8080` form (no trailing slash), as used in connection strings.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.authority())
    }

    /// `host[:port]`, lower-case.
    pub fn authority(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{}", self.host, port),
            None => self.host.clone(),
        }
    }

    /// The host alone (no port), as sent in `WebHook-Request-Origin`.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn is_https(&self) -> bool {
        self.scheme == "https"
    }

    fn accepts_authority(&self, aud: &UrlParts) -> bool {
        if aud.host != self.host {
            return false;
        }
        match (aud.port, self.port) {
            (Some(a), Some(e)) => a == e,
            (Some(a), None) => a == default_port(&self.scheme),
            (None, Some(e)) => e == default_port(&aud.scheme),
            (None, None) => true,
        }
    }
}

impl fmt::Display for PublicEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url())
    }
}

fn default_port(scheme: &str) -> u16 {
    match scheme {
        "https" | "wss" => 443,
        _ => 80,
    }
}

/// Why an audience was refused. Audiences are URLs, not secrets, so messages may quote them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AudienceError {
    #[error("the token has no 'aud' claim")]
    Missing,
    #[error("the token's audience is not a URL")]
    NotAUrl,
    #[error("the token's audience host '{got}' is not a public endpoint of this service (expected {expected})")]
    WrongHost { got: String, expected: String },
    #[error("the token's audience path '{got}' does not match the request path '{expected}'")]
    WrongPath { got: String, expected: String },
}

/// Accepts when any audience names one of `endpoints` and `expected_path` (the raw request path).
pub fn check(
    audiences: &[&str],
    endpoints: &[PublicEndpoint],
    expected_path: &str,
) -> Result<(), AudienceError> {
    let mut error = AudienceError::Missing;
    for aud in audiences {
        match check_one(aud, endpoints, expected_path) {
            Ok(()) => return Ok(()),
            Err(e) => error = e,
        }
    }
    Err(error)
}

fn check_one(
    aud: &str,
    endpoints: &[PublicEndpoint],
    expected_path: &str,
) -> Result<(), AudienceError> {
    let parts = UrlParts::parse(aud).ok_or(AudienceError::NotAUrl)?;
    if !endpoints.iter().any(|e| e.accepts_authority(&parts)) {
        let expected = endpoints
            .iter()
            .map(PublicEndpoint::authority)
            .collect::<Vec<_>>()
            .join(" or ");
        let got = match parts.port {
            Some(port) => format!("{}:{}", parts.host, port),
            None => parts.host,
        };
        return Err(AudienceError::WrongHost { got, expected });
    }
    if normalize_path(&parts.path) != normalize_path(expected_path) {
        return Err(AudienceError::WrongPath {
            got: parts.path,
            expected: expected_path.to_string(),
        });
    }
    Ok(())
}

/// Lower-cases, drops a trailing `/`, and decodes every percent-escape except those of
/// `/`, `?`, `#` and `%` (which would change how the path splits).
pub fn normalize_path(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                let decoded = h * 16 + l;
                if matches!(decoded, b'/' | b'?' | b'#' | b'%') {
                    out.extend_from_slice(&[b'%', bytes[i + 1], bytes[i + 2]]);
                } else {
                    out.push(decoded);
                }
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    while out.len() > 1 && out.last() == Some(&b'/') {
        out.pop();
    }
    if out == b"/" {
        out.clear();
    }
    String::from_utf8_lossy(&out).to_lowercase()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The parts of an absolute URL that audience checks need, split without normalisation.
struct UrlParts {
    scheme: String,
    host: String,
    port: Option<u16>,
    path: String,
    rest_after_path: bool,
}

impl UrlParts {
    fn parse(text: &str) -> Option<Self> {
        let (scheme, rest) = text.split_once("://")?;
        if scheme.is_empty()
            || !scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return None;
        }
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        let after = &rest[authority_end..];
        let path_end = after.find(['?', '#']).unwrap_or(after.len());
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
        let (host, port) = split_host_port(host_port)?;
        if host.is_empty() {
            return None;
        }
        Some(Self {
            scheme: scheme.to_ascii_lowercase(),
            host: host.to_ascii_lowercase(),
            port,
            path: after[..path_end].to_string(),
            rest_after_path: path_end < after.len(),
        })
    }
}

fn split_host_port(host_port: &str) -> Option<(&str, Option<u16>)> {
    if let Some(stripped) = host_port.strip_prefix('[') {
        // IPv6 literal: [::1]:8080
        let (inside, after) = stripped.split_once(']')?;
        let host = &host_port[..inside.len() + 2];
        return match after.strip_prefix(':') {
            Some(port) => Some((host, Some(port.parse().ok()?))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match host_port.rsplit_once(':') {
        Some((host, "")) => Some((host, None)),
        Some((host, port)) => Some((host, Some(port.parse().ok()?))),
        None => Some((host_port, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints() -> Vec<PublicEndpoint> {
        vec![
            PublicEndpoint::parse("http://localhost:8080").unwrap(),
            PublicEndpoint::parse("https://hubbub.example.com").unwrap(),
        ]
    }

    #[test]
    fn endpoint_parsing() {
        let e = PublicEndpoint::parse("HTTP://LocalHost:8080/").unwrap();
        assert_eq!(e.url(), "http://localhost:8080");
        assert_eq!(e.host(), "localhost");
        assert!(matches!(
            PublicEndpoint::parse("http://h/prefix"),
            Err(EndpointError::HasPath(_))
        ));
        assert!(matches!(
            PublicEndpoint::parse("ws://h"),
            Err(EndpointError::NotHttpUrl(_))
        ));
        assert!(PublicEndpoint::parse("localhost:8080").is_err());
        assert_eq!(
            PublicEndpoint::parse("http://[::1]:9000")
                .unwrap()
                .authority(),
            "[::1]:9000"
        );
    }

    #[test]
    fn accepts_what_each_sdk_sends() {
        let e = endpoints();
        // JS: full URL with query.
        let js = "http://localhost:8080/api/hubs/Hub1/:send?api-version=2024-12-01&excluded=c1";
        assert_eq!(check(&[js], &e, "/api/hubs/Hub1/:send"), Ok(()));
        // Python keeps the host's case.
        let py = "http://LocalHost:8080/api/hubs/Hub1/:send?excluded=a&api-version=2024-12-01";
        assert_eq!(check(&[py], &e, "/api/hubs/hub1/:send"), Ok(()));
        // Scheme is ignored; default ports line up.
        for aud in [
            "wss://hubbub.example.com/client/hubs/chat",
            "http://hubbub.example.com/client/hubs/chat",
            "https://hubbub.example.com:443/client/hubs/chat/",
        ] {
            assert_eq!(check(&[aud], &e, "/client/hubs/Chat"), Ok(()), "{aud}");
        }
        // Percent-escapes compare decoded, except those of '/'.
        let aud = "http://localhost:8080/api/hubs/h/users/user%201/:send";
        assert_eq!(check(&[aud], &e, "/api/hubs/h/users/user 1/:send"), Ok(()));
        let aud = "http://localhost:8080/api/hubs/h/groups/g%2F1/:send";
        assert_eq!(check(&[aud], &e, "/api/hubs/h/groups/g%2f1/:send"), Ok(()));
        assert!(check(&[aud], &e, "/api/hubs/h/groups/g/1/:send").is_err());
    }

    #[test]
    fn refuses_what_the_live_service_refuses() {
        let e = endpoints();
        assert!(matches!(
            check(
                &["https://hubbub.example.comclient/hubs/chat"],
                &e,
                "/client/hubs/chat"
            ),
            Err(AudienceError::WrongHost { .. })
        ));
        assert!(matches!(
            check(
                &["https://hubbub.example.com/client/hubs/other"],
                &e,
                "/client/hubs/chat"
            ),
            Err(AudienceError::WrongPath { .. })
        ));
        assert!(matches!(
            check(
                &["https://other.example.com/client/hubs/chat"],
                &e,
                "/client/hubs/chat"
            ),
            Err(AudienceError::WrongHost { .. })
        ));
        assert!(matches!(
            check(
                &["http://localhost:8081/api/hubs/h/:send"],
                &e,
                "/api/hubs/h/:send"
            ),
            Err(AudienceError::WrongHost { .. })
        ));
        assert_eq!(check(&[], &e, "/"), Err(AudienceError::Missing));
        assert_eq!(check(&["not a url"], &e, "/"), Err(AudienceError::NotAUrl));
    }

    #[test]
    fn any_audience_of_an_array_may_match() {
        let e = endpoints();
        let auds = ["https://other/x", "http://localhost:8080/api/hubs/h/:send"];
        assert_eq!(check(&auds, &e, "/api/hubs/h/:send"), Ok(()));
    }

    #[test]
    fn path_normalisation() {
        assert_eq!(normalize_path("/A/B%20c/"), "/a/b c");
        assert_eq!(normalize_path("/a%2fb"), "/a%2fb");
        assert_eq!(normalize_path("/a%25"), "/a%25");
        assert_eq!(normalize_path("/"), "");
        assert_eq!(normalize_path("/bad%zz"), "/bad%zz");
        assert_eq!(normalize_path("/end%2"), "/end%2");
    }
}
