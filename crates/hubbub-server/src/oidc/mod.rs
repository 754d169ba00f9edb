//! Identity-provider tokens instead of access keys: OpenID Connect bearer tokens from issuers the
//! operator trusts (Entra ID, Keycloak, Dex, Okta, Auth0...), as the Azure SDKs send them when
//! built with a `TokenCredential`.
//!
//! A token is accepted when, in this order: its algorithm is an asymmetric one Hubbub knows
//! (never `none`, never HMAC); its `iss` is exactly a configured issuer; the key named by its
//! `kid` **in that issuer's key set** verifies it (keys are looked up by issuer and `kid`
//! together, so one issuer's token never passes with another issuer's key); `exp` and `nbf` hold
//! with the configured leeway; its `aud` names a configured audience; and its role claim grants
//! the operation. Each refusal says which check failed and never repeats the token.
//!
//! Key sets are fetched at start (through discovery, or from an explicit JWKS URL), again when a
//! token names an unknown `kid` (at most once per [`REFRESH_AT_MOST_EVERY`] per issuer), and when
//! their cache lifetime ends; a failed fetch keeps the keys already known.

pub mod jwks;

use crate::clock::UnixMillis;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hubbub_proto::jwt::Claims;
use jwks::Jwk;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// The audience the Azure SDKs ask tokens for (`https://webpubsub.azure.com/.default`).
pub const DEFAULT_AUDIENCE: &str = "https://webpubsub.azure.com";
/// The claim roles are read from, by default.
pub const DEFAULT_ROLE_CLAIM: &str = "roles";
/// Azure's built-in roles: every REST operation, and the read-only ones.
pub const OWNER_ROLE: &str = "Web PubSub Service Owner";
pub const READER_ROLE: &str = "Web PubSub Service Reader";
/// The role that opens the admin API to an identity.
pub const ADMIN_ROLE: &str = "Hubbub Administrator";
/// The least time between two fetches of an issuer's keys prompted by unknown `kid`s.
pub const REFRESH_AT_MOST_EVERY: Duration = Duration::from_secs(60);
/// The least time between two attempts at an issuer's first key set (it was down at start).
pub const FIRST_FETCH_AT_MOST_EVERY: Duration = Duration::from_secs(5);
/// Bounds on a key set's cache lifetime (`Cache-Control: max-age`).
const MIN_KEYS_LIFETIME: Duration = Duration::from_secs(5 * 60);
const MAX_KEYS_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// The largest discovery document or key set read.
const MAX_DOCUMENT_BYTES: usize = 512 * 1024;
/// The longest token looked at.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// One trusted issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerSettings {
    /// Exactly as tokens carry it in `iss`.
    pub issuer: String,
    /// Where its keys are, when not found through `{issuer}/.well-known/openid-configuration`.
    pub jwks_url: Option<String>,
}

/// What identity-provider tokens must be and what their roles grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcSettings {
    pub issuers: Vec<IssuerSettings>,
    pub audiences: Vec<String>,
    pub role_claim: String,
    pub owner_roles: Vec<String>,
    pub reader_roles: Vec<String>,
    pub admin_roles: Vec<String>,
    pub leeway_secs: i64,
}

impl OidcSettings {
    pub fn new(issuers: Vec<IssuerSettings>) -> Self {
        Self {
            issuers,
            audiences: vec![DEFAULT_AUDIENCE.into()],
            role_claim: DEFAULT_ROLE_CLAIM.into(),
            owner_roles: vec![OWNER_ROLE.into()],
            reader_roles: vec![READER_ROLE.into()],
            admin_roles: vec![ADMIN_ROLE.into()],
            leeway_secs: 300,
        }
    }
}

/// What a verified identity may do with the REST API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Read-only operations (`GET`, `HEAD`).
    Reader,
    /// Every operation.
    Owner,
}

/// A verified identity-provider token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub issuer: String,
    /// `sub` (or `oid`, `appid`, `azp` when it has none), never the token.
    pub subject: String,
    /// The most its roles grant on the REST API, if anything.
    pub grant: Option<Grant>,
    /// Whether its roles open the admin API.
    pub admin: bool,
}

/// Why an identity-provider token was refused: which check failed, never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    #[error("the token is not a JWT: {0}")]
    Malformed(&'static str),
    #[error("the token's algorithm '{0}' is not accepted; identity-provider tokens must be signed with RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA")]
    Algorithm(String),
    #[error("the token's issuer ('iss') is not a trusted identity provider of this instance")]
    UntrustedIssuer,
    #[error("the token names no signing key ('kid') its issuer publishes")]
    UnknownKey,
    #[error("the token's signature does not verify with its issuer's key")]
    BadSignature,
    #[error("the token expired")]
    Expired,
    #[error("the token is not valid yet ('nbf' is in the future)")]
    NotYetValid,
    #[error("the token has no valid 'exp' claim")]
    MissingExpiry,
    #[error("the token's audience ('aud') is not one this instance accepts (expected {0})")]
    Audience(String),
    #[error("the identity has no role that allows this ({0})")]
    Forbidden(String),
}

impl OidcError {
    /// A short, stable reason for metrics and the trace.
    pub fn reason(&self) -> &'static str {
        match self {
            OidcError::Malformed(_) => "malformed",
            OidcError::Algorithm(_) => "algorithm",
            OidcError::UntrustedIssuer => "issuer",
            OidcError::UnknownKey => "unknown_key",
            OidcError::BadSignature => "bad_signature",
            OidcError::Expired => "expired",
            OidcError::NotYetValid => "not_yet_valid",
            OidcError::MissingExpiry => "missing_expiry",
            OidcError::Audience(_) => "audience",
            OidcError::Forbidden(_) => "role",
        }
    }
}

/// A token's parts before its signature is checked.
struct Parts<'a> {
    alg: String,
    kid: Option<String>,
    signing_input: &'a str,
    signature: Vec<u8>,
    claims: Claims,
}

/// Whether a token's header names an asymmetric algorithm (so it is for the identity
/// providers, not signed with an access key).
pub fn is_identity_token(token: &str) -> bool {
    header(token)
        .and_then(|h| h.get("alg").and_then(Value::as_str).map(str::to_owned))
        .is_some_and(|alg| alg != "HS256")
}

fn header(token: &str) -> Option<Value> {
    let encoded = token.split('.').next()?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(encoded).ok()?).ok()
}

fn split(token: &str) -> Result<Parts<'_>, OidcError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(OidcError::Malformed("it is too long"));
    }
    let mut pieces = token.split('.');
    let (Some(head), Some(payload), Some(signature), None) =
        (pieces.next(), pieces.next(), pieces.next(), pieces.next())
    else {
        return Err(OidcError::Malformed(
            "it must have three dot-separated parts",
        ));
    };
    let header = header(token).ok_or(OidcError::Malformed(
        "the header is not base64url-encoded JSON",
    ))?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let claims = match URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
    {
        Some(Value::Object(map)) => Claims(map),
        _ => return Err(OidcError::Malformed("the payload is not a JSON object")),
    };
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| OidcError::Malformed("the signature is not base64url"))?;
    Ok(Parts {
        alg,
        kid: header.get("kid").and_then(Value::as_str).map(str::to_owned),
        signing_input: &token[..head.len() + 1 + payload.len()],
        signature,
        claims,
    })
}

/// One issuer's keys and when to fetch them again.
#[derive(Debug)]
struct IssuerKeys {
    settings: IssuerSettings,
    keys: RwLock<HashMap<String, Arc<Jwk>>>,
    /// The last fetch prompted by an unknown `kid`, and when the keys expire.
    fetched: Mutex<Fetched>,
}

#[derive(Debug, Default)]
struct Fetched {
    /// The last fetch prompted by an unknown `kid` or expired keys, once keys were known.
    last_refresh: Option<Instant>,
    /// The last fetch a token prompted before any fetch succeeded.
    last_first_attempt: Option<Instant>,
    /// When the keys expire; `None` until a fetch succeeds.
    expires: Option<Instant>,
}

/// Identities counted by name; later ones are counted together (per issuer).
pub const MAX_IDENTITIES: usize = 1000;
/// The subject under which identities beyond [`MAX_IDENTITIES`] are counted.
pub const OTHER_SUBJECTS: &str = "(others)";

/// What one identity did: calls authenticated, and when last.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityUse {
    pub issuer: String,
    pub subject: String,
    pub rest_requests: u64,
    pub admin_requests: u64,
    pub last_used_at: Option<String>,
}

/// The verifier: trusted issuers with their keys, and what each identity used. Cheap to share
/// (`Arc`).
#[derive(Debug)]
pub struct Oidc {
    settings: OidcSettings,
    issuers: HashMap<String, IssuerKeys>,
    http: reqwest::Client,
    usage: Mutex<HashMap<(String, String), IdentityUse>>,
}

impl Oidc {
    pub fn new(settings: OidcSettings) -> Self {
        let issuers = settings
            .issuers
            .iter()
            .map(|i| {
                (
                    i.issuer.clone(),
                    IssuerKeys {
                        settings: i.clone(),
                        keys: RwLock::default(),
                        fetched: Mutex::default(),
                    },
                )
            })
            .collect();
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .unwrap_or_default();
        Self {
            settings,
            issuers,
            http,
            usage: Mutex::default(),
        }
    }

    /// Counts a call `identity` made (`admin`: on the admin API) at `now`.
    pub fn record_use(&self, identity: &Identity, admin: bool, now: UnixMillis) {
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let mut key = (identity.issuer.clone(), identity.subject.clone());
        if !usage.contains_key(&key) && usage.len() >= MAX_IDENTITIES {
            key.1 = OTHER_SUBJECTS.into();
        }
        let entry = usage.entry(key.clone()).or_insert_with(|| IdentityUse {
            issuer: key.0,
            subject: key.1,
            ..IdentityUse::default()
        });
        if admin {
            entry.admin_requests += 1;
        } else {
            entry.rest_requests += 1;
        }
        entry.last_used_at = Some(crate::clock::rfc3339(now));
    }

    /// Every identity's use on this node, most recent first.
    pub fn usage(&self) -> Vec<IdentityUse> {
        let mut all: Vec<IdentityUse> = self
            .usage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| b.last_used_at.cmp(&a.last_used_at));
        all
    }

    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    /// Fetches every issuer's keys (at start); a failure is logged and retried on first use.
    pub async fn fetch_all(&self) {
        for issuer in self.issuers.values() {
            if let Err(e) = self.fetch(issuer).await {
                tracing::warn!(issuer = %issuer.settings.issuer, error = %e, "could not fetch an identity provider's keys; will try again when a token needs them");
            }
        }
    }

    /// Fetches one issuer's key set (through discovery unless its JWKS URL is configured) and
    /// replaces its keys; on failure (or a set without a usable key) the keys already known
    /// stay.
    async fn fetch(&self, issuer: &IssuerKeys) -> Result<usize, String> {
        let jwks_url = match &issuer.settings.jwks_url {
            Some(url) => url.clone(),
            None => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.settings.issuer.trim_end_matches('/')
                );
                let (discovery, _) = self.get_json(&url).await?;
                if discovery.get("issuer").and_then(Value::as_str)
                    != Some(issuer.settings.issuer.as_str())
                {
                    return Err(
                        "the discovery document names another issuer than the one configured"
                            .into(),
                    );
                }
                discovery
                    .get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or("the discovery document has no jwks_uri")?
                    .to_string()
            }
        };
        let (document, lifetime) = self.get_json(&jwks_url).await?;
        let keys: HashMap<String, Arc<Jwk>> = jwks::parse_set(&document)
            .into_iter()
            .map(|k| (k.kid.clone(), Arc::new(k)))
            .collect();
        let count = keys.len();
        if count == 0 {
            return Err(format!("{jwks_url} has no usable signing key"));
        }
        *issuer.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        issuer
            .fetched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .expires = Some(Instant::now() + lifetime);
        tracing::info!(issuer = %issuer.settings.issuer, keys = count, "identity provider keys fetched");
        Ok(count)
    }

    /// A JSON document (bounded) and how long it may be cached.
    async fn get_json(&self, url: &str) -> Result<(Value, Duration), String> {
        let mut response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("{url}: {}", e.without_url()))?;
        if !response.status().is_success() {
            return Err(format!("{url} answered {}", response.status()));
        }
        let lifetime = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.split(',')
                    .filter_map(|d| d.trim().strip_prefix("max-age="))
                    .find_map(|s| s.parse::<u64>().ok())
            })
            .map_or(MIN_KEYS_LIFETIME, Duration::from_secs)
            .clamp(MIN_KEYS_LIFETIME, MAX_KEYS_LIFETIME);
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("{url}: {}", e.without_url()))?
        {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(format!("{url} is larger than {MAX_DOCUMENT_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        let value = serde_json::from_slice(&body).map_err(|_| format!("{url} is not JSON"))?;
        Ok((value, lifetime))
    }

    /// The key `kid` of `issuer`, fetching the issuer's keys again when it is unknown (at most
    /// once per [`REFRESH_AT_MOST_EVERY`]) or when they expired.
    async fn key(&self, issuer: &IssuerKeys, kid: Option<&str>) -> Option<Arc<Jwk>> {
        let find = || {
            let keys = issuer.keys.read().unwrap_or_else(|p| p.into_inner());
            match kid {
                Some(kid) => keys.get(kid).cloned(),
                // No `kid`: only an issuer with a single key can say which.
                None if keys.len() == 1 => keys.values().next().cloned(),
                None => None,
            }
        };
        let (expired, known) = {
            let fetched = issuer.fetched.lock().unwrap_or_else(|p| p.into_inner());
            let expired = fetched.expires.is_none_or(|e| Instant::now() >= e);
            (expired, fetched.expires.is_some())
        };
        if let (Some(found), false) = (find(), expired) {
            return Some(found);
        }
        // Once keys are known, unknown kids and expiry refresh at most once a minute; before
        // that (the issuer was down at start, or the first token came first) every 5 s. A first
        // fetch never uses up the refresh a rotated key needs.
        let may_refresh = {
            let mut fetched = issuer.fetched.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let (last, every) = if known {
                (&mut fetched.last_refresh, REFRESH_AT_MOST_EVERY)
            } else {
                (&mut fetched.last_first_attempt, FIRST_FETCH_AT_MOST_EVERY)
            };
            let may = last.is_none_or(|at| now.duration_since(at) >= every);
            if may {
                *last = Some(now);
            }
            may
        };
        if may_refresh {
            if let Err(e) = self.fetch(issuer).await {
                tracing::warn!(issuer = %issuer.settings.issuer, error = %e, "could not fetch an identity provider's keys; keeping those already known");
            }
        }
        find()
    }

    /// Verifies an identity-provider token at `now`.
    pub async fn verify(&self, token: &str, now: UnixMillis) -> Result<Identity, OidcError> {
        let parts = split(token)?;
        if !jwks::ALGORITHMS.contains(&parts.alg.as_str()) {
            return Err(OidcError::Algorithm(
                parts.alg.chars().take(16).collect::<String>(),
            ));
        }
        let iss = parts
            .claims
            .0
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(OidcError::UntrustedIssuer)?;
        let issuer = self.issuers.get(iss).ok_or(OidcError::UntrustedIssuer)?;
        let key = self
            .key(issuer, parts.kid.as_deref())
            .await
            .ok_or(OidcError::UnknownKey)?;
        if !key.verifies(&parts.alg, parts.signing_input.as_bytes(), &parts.signature) {
            return Err(OidcError::BadSignature);
        }
        parts
            .claims
            .validate_time(now.div_euclid(1000), self.settings.leeway_secs)
            .map_err(|e| match e {
                hubbub_proto::jwt::JwtError::Expired => OidcError::Expired,
                hubbub_proto::jwt::JwtError::NotYetValid => OidcError::NotYetValid,
                _ => OidcError::MissingExpiry,
            })?;
        let audiences = parts.claims.audiences();
        if !self
            .settings
            .audiences
            .iter()
            .any(|a| audiences.contains(&a.as_str()))
        {
            return Err(OidcError::Audience(self.settings.audiences.join(" or ")));
        }
        let roles: Vec<&str> = match parts.claims.0.get(&self.settings.role_claim) {
            Some(Value::String(role)) => role.split(' ').collect(),
            Some(Value::Array(roles)) => roles.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let has = |names: &[String]| roles.iter().any(|r| names.iter().any(|n| n == r));
        let grant = if has(&self.settings.owner_roles) {
            Some(Grant::Owner)
        } else if has(&self.settings.reader_roles) {
            Some(Grant::Reader)
        } else {
            None
        };
        let claim = |name: &str| parts.claims.0.get(name).and_then(Value::as_str);
        let subject = ["sub", "oid", "appid", "azp"]
            .iter()
            .find_map(|name| claim(name))
            .unwrap_or("unknown")
            .chars()
            .take(256)
            .collect();
        Ok(Identity {
            issuer: iss.to_string(),
            subject,
            grant,
            admin: has(&self.settings.admin_roles),
        })
    }
}

/// Whether `grant` allows a REST request with `method`.
pub fn allows(grant: Option<Grant>, method: &axum::http::Method) -> bool {
    use axum::http::Method;
    match grant {
        Some(Grant::Owner) => true,
        Some(Grant::Reader) => method == Method::GET || method == Method::HEAD,
        None => false,
    }
}

#[cfg(test)]
mod tests;
