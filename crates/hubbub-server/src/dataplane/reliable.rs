//! Reconnection tokens of the reliable protocol: signed with the salt, so rotating an access key
//! never breaks recovery, and regenerating the salt does.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hubbub_proto::jwt::hmac_sha256;
use subtle::ConstantTimeEq;

/// How long a reconnection token is valid (the service documents about a week).
pub const RECONNECTION_TOKEN_LIFETIME_SECS: i64 = 7 * 24 * 3600;

fn signing_input(hub: &str, connection_id: &str, expires: i64) -> String {
    format!("hubbub-reconnect\n{hub}\n{connection_id}\n{expires}")
}

/// `<expiry>.<signature>`, both URL-safe.
pub fn issue(salt: &str, hub: &str, connection_id: &str, now_secs: i64) -> String {
    let expires = now_secs + RECONNECTION_TOKEN_LIFETIME_SECS;
    let signature = hmac_sha256(
        salt.as_bytes(),
        signing_input(hub, connection_id, expires).as_bytes(),
    );
    format!("{expires}.{}", URL_SAFE_NO_PAD.encode(signature))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecoveryError {
    #[error("the reconnection token is malformed")]
    Malformed,
    #[error("the reconnection token expired")]
    Expired,
    #[error("the reconnection token is not valid for this connection")]
    BadSignature,
    #[error("the session no longer exists")]
    SessionGone,
}

pub fn verify(
    token: &str,
    salt: &str,
    hub: &str,
    connection_id: &str,
    now_secs: i64,
) -> Result<(), RecoveryError> {
    let (expires, signature) = token.split_once('.').ok_or(RecoveryError::Malformed)?;
    let expires: i64 = expires.parse().map_err(|_| RecoveryError::Malformed)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| RecoveryError::Malformed)?;
    let expected = hmac_sha256(
        salt.as_bytes(),
        signing_input(hub, connection_id, expires).as_bytes(),
    );
    if !bool::from(expected.as_slice().ct_eq(&signature)) {
        return Err(RecoveryError::BadSignature);
    }
    if now_secs >= expires {
        return Err(RecoveryError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_for_their_connection_and_salt_only() {
        let token = issue("salt", "hub", "c1", 1000);
        assert_eq!(verify(&token, "salt", "hub", "c1", 1001), Ok(()));
        assert_eq!(
            verify(&token, "new-salt", "hub", "c1", 1001),
            Err(RecoveryError::BadSignature)
        );
        assert_eq!(
            verify(&token, "salt", "hub", "c2", 1001),
            Err(RecoveryError::BadSignature)
        );
        assert_eq!(
            verify(&token, "salt", "other", "c1", 1001),
            Err(RecoveryError::BadSignature)
        );
        assert_eq!(
            verify(
                &token,
                "salt",
                "hub",
                "c1",
                1000 + RECONNECTION_TOKEN_LIFETIME_SECS
            ),
            Err(RecoveryError::Expired)
        );
        assert_eq!(
            verify("garbage", "salt", "hub", "c1", 0),
            Err(RecoveryError::Malformed)
        );
        let forged = format!("{}.{}", 9_999_999_999i64, token.split_once('.').unwrap().1);
        assert_eq!(
            verify(&forged, "salt", "hub", "c1", 0),
            Err(RecoveryError::BadSignature)
        );
    }
}
