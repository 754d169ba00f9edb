//! Verifies REST bearer tokens against the key ring: HS256 with the primary or the secondary key
//! (tried in constant time), `exp` required, `nbf` honoured, and the audience naming a public
//! endpoint and the request path. Records which slot verified each request; never logs a token.

use crate::error::ApiError;
use crate::keys::KeyRing;
use hubbub_proto::audience::{self, AudienceError, PublicEndpoint};
use hubbub_proto::jwt::{self, JwtError};
use hubbub_proto::keys::KeySlot;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the request has no 'Authorization: Bearer <token>' header")]
    MissingToken,
    #[error("the Authorization header must use the Bearer scheme")]
    NotBearer,
    #[error(transparent)]
    Token(#[from] JwtError),
    #[error(transparent)]
    Audience(#[from] AudienceError),
    #[error("the {slot} key must be rotated and no longer authenticates ({reason}); use the other key, or regenerate this one")]
    RotationRequired { slot: KeySlot, reason: String },
    #[error("local auth is disabled on this instance: access keys and tokens signed with them are not accepted; use an identity-provider token (a TokenCredential) instead of a connection string, or a client token from :generateToken")]
    LocalAuthDisabled,
    #[error("The token was signed with the {slot} key version {version}, which was regenerated at {}. Update this app's connection string.", crate::clock::rfc3339(*.replaced_at))]
    StaleKey {
        slot: KeySlot,
        version: u64,
        replaced_at: crate::clock::UnixMillis,
    },
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::unauthorized(e.to_string())
    }
}

/// Extracts the token from an `Authorization` header value.
pub fn bearer_token(header: Option<&str>) -> Result<&str, AuthError> {
    let value = header.ok_or(AuthError::MissingToken)?.trim();
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::NotBearer);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::MissingToken);
    }
    Ok(token)
}

/// Which key signed a token: the access slot, and whether it was an earlier value of the slot in
/// its grace period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signer {
    pub slot: KeySlot,
    /// The version of the value that signed it.
    pub version: u64,
    pub retiring: bool,
}

/// Checks a REST token; on success returns the key that signed it.
pub fn verify_rest_token(
    token: &str,
    ring: &KeyRing,
    endpoints: &[PublicEndpoint],
    request_path: &str,
    now_millis: i64,
    leeway_secs: i64,
) -> Result<Signer, AuthError> {
    let decoded = jwt::decode(token)?;
    if ring.local_auth_disabled {
        return Err(AuthError::LocalAuthDisabled);
    }
    let signer = verify_access_key(&decoded, ring, now_millis)?;
    decoded
        .claims
        .validate_time(now_millis.div_euclid(1000), leeway_secs)?;
    audience::check(&decoded.claims.audiences(), endpoints, request_path)?;
    Ok(signer)
}

/// Verifies against the access keys (and old values in a grace period); refuses a key whose
/// rotation deadline has passed.
fn verify_access_key(
    decoded: &jwt::UnverifiedToken<'_>,
    ring: &KeyRing,
    now: i64,
) -> Result<Signer, AuthError> {
    let candidates = ring.candidates(now);
    let keys: Vec<&[u8]> = candidates.iter().map(|c| c.key).collect();
    let matched = match decoded.verify_signature(&keys) {
        Ok(index) => candidates[index],
        Err(JwtError::BadSignature) => return Err(stale_or_bad(decoded, ring)),
        Err(e) => return Err(e.into()),
    };
    if !matched.retiring {
        if let Some(requirement) = ring.disabled(matched.slot, now) {
            return Err(AuthError::RotationRequired {
                slot: matched.slot,
                reason: requirement.reason.clone(),
            });
        }
    }
    Ok(Signer {
        slot: matched.slot,
        version: matched.version,
        retiring: matched.retiring,
    })
}

/// A token no accepted key signed: if an earlier value of an access slot (still recognised)
/// signed it, says which and when it was regenerated; otherwise a bad signature.
fn stale_or_bad(decoded: &jwt::UnverifiedToken<'_>, ring: &KeyRing) -> AuthError {
    let previous: Vec<&[u8]> = ring
        .previous
        .iter()
        .map(|k| k.value.expose().as_bytes())
        .collect();
    match decoded.verify_signature(&previous) {
        Ok(index) => {
            let key = &ring.previous[index];
            AuthError::StaleKey {
                slot: key.slot,
                version: key.version,
                replaced_at: key.replaced_at,
            }
        }
        Err(_) => AuthError::Token(JwtError::BadSignature),
    }
}

/// What a verified client access token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientClaims {
    pub user_id: Option<String>,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    /// The access slot whose key signed the token; `Salt` for service-issued tokens.
    pub slot: KeySlot,
    /// The version of the value that signed it (0 for anonymous connections).
    pub version: u64,
    /// Signed by an earlier value of the slot in its grace period.
    pub retiring: bool,
    /// Every claim, for the `connect` event.
    pub raw: serde_json::Map<String, serde_json::Value>,
}

impl ClientClaims {
    /// An anonymous connection (hubs whose anonymous-connect policy is `allow`).
    pub fn anonymous() -> Self {
        Self {
            user_id: None,
            roles: Vec::new(),
            groups: Vec::new(),
            slot: KeySlot::Salt,
            version: 0,
            retiring: false,
            raw: serde_json::Map::new(),
        }
    }
}

/// Service-issued tokens (`:generateToken`) carry a `kid` with this prefix and are signed with
/// the salt; any other token is tried against the primary, then the secondary key.
pub const SERVICE_KID_PREFIX: &str = "s-";

const LONG_ROLE_CLAIM: &str = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role";

fn strings(value: Option<&serde_json::Value>) -> Vec<String> {
    match value {
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// Checks a client access token for `/client/hubs/{hub}`.
pub fn verify_client_token(
    token: &str,
    ring: &KeyRing,
    endpoints: &[PublicEndpoint],
    client_path: &str,
    now_millis: i64,
    leeway_secs: i64,
) -> Result<ClientClaims, AuthError> {
    let decoded = jwt::decode(token)?;
    let service_issued = decoded
        .kid
        .as_deref()
        .is_some_and(|k| k.starts_with(SERVICE_KID_PREFIX));
    let signer = if service_issued {
        decoded.verify_signature(&[ring.salt.value.expose().as_bytes()])?;
        Signer {
            slot: KeySlot::Salt,
            version: ring.salt.version,
            retiring: false,
        }
    } else if ring.local_auth_disabled {
        return Err(AuthError::LocalAuthDisabled);
    } else {
        verify_access_key(&decoded, ring, now_millis)?
    };
    decoded
        .claims
        .validate_time(now_millis.div_euclid(1000), leeway_secs)?;
    audience::check(&decoded.claims.audiences(), endpoints, client_path)?;
    let claims = &decoded.claims.0;
    let mut roles = strings(claims.get("role"));
    roles.extend(strings(claims.get(LONG_ROLE_CLAIM)));
    Ok(ClientClaims {
        user_id: decoded
            .claims
            .subject()
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        roles,
        groups: strings(claims.get("webpubsub.group")),
        slot: signer.slot,
        version: signer.version,
        retiring: signer.retiring,
        raw: claims.clone(),
    })
}
