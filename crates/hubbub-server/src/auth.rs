//! Verifies REST bearer tokens against the key ring: HS256 with the primary or the secondary key
//! (tried in constant time), `exp` required, `nbf` honoured, and the audience naming a public
//! endpoint and the request path. Records which slot verified each request; never logs a token.

use crate::error::ApiError;
use crate::keys::{KeyRing, ACCESS_SLOTS};
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

/// Checks a REST token; on success returns the access slot whose key signed it.
pub fn verify_rest_token(
    token: &str,
    ring: &KeyRing,
    endpoints: &[PublicEndpoint],
    request_path: &str,
    now_secs: i64,
    leeway_secs: i64,
) -> Result<KeySlot, AuthError> {
    let decoded = jwt::decode(token)?;
    let index = decoded.verify_signature(&ring.access_key_bytes())?;
    decoded.claims.validate_time(now_secs, leeway_secs)?;
    audience::check(&decoded.claims.audiences(), endpoints, request_path)?;
    Ok(ACCESS_SLOTS[index])
}
