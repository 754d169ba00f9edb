//! HS256 JSON Web Tokens as the Web PubSub SDKs make them: sign, and verify against several keys
//! in constant time. The HMAC key is the UTF-8 bytes of the access key string, never base64-decoded.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;
use subtle::{ConditionallySelectable, ConstantTimeEq};

type HmacSha256 = Hmac<Sha256>;

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// base64url without padding when encoding; padding tolerated when decoding.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a token was refused. Messages say what was wrong and never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the token is not a JWT: {0}")]
    Malformed(&'static str),
    #[error("the token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    #[error("the token's algorithm must be HS256")]
    UnsupportedAlgorithm,
    #[error("the token's signature does not match any current access key")]
    BadSignature,
    #[error("the token has no 'exp' claim; an expiry time is required")]
    MissingExpiry,
    #[error("the token's '{0}' claim is not a number")]
    BadTimeClaim(&'static str),
    #[error("the token expired")]
    Expired,
    #[error("the token is not valid yet ('nbf' is in the future)")]
    NotYetValid,
}

/// The decoded parts of a token whose signature has not been checked yet.
#[derive(Debug, Clone)]
pub struct UnverifiedToken<'a> {
    signing_input: &'a str,
    signature: Vec<u8>,
    /// The `kid` header, when present (service-issued tokens carry one).
    pub kid: Option<String>,
    pub claims: Claims,
}

/// A token's payload, with accessors for the claims Web PubSub uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims(pub Map<String, Value>);

impl Claims {
    /// Every `aud` value: a string, or each string of an array.
    pub fn audiences(&self) -> Vec<&str> {
        match self.0.get("aud") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// `sub`, the user id, when it is a string.
    pub fn subject(&self) -> Option<&str> {
        self.0.get("sub").and_then(Value::as_str)
    }

    fn numeric_date(&self, name: &'static str) -> Result<Option<i64>, JwtError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
                .map(Some)
                .ok_or(JwtError::BadTimeClaim(name)),
            Some(_) => Err(JwtError::BadTimeClaim(name)),
        }
    }

    /// `exp` is required and `nbf` honoured, each with `leeway_secs` of tolerated clock skew.
    /// `iat` is not required (Python SDK tokens carry none) and is not checked.
    pub fn validate_time(&self, now_unix: i64, leeway_secs: i64) -> Result<(), JwtError> {
        let exp = self.numeric_date("exp")?.ok_or(JwtError::MissingExpiry)?;
        if now_unix >= exp.saturating_add(leeway_secs) {
            return Err(JwtError::Expired);
        }
        if let Some(nbf) = self.numeric_date("nbf")? {
            if now_unix.saturating_add(leeway_secs) < nbf {
                return Err(JwtError::NotYetValid);
            }
        }
        Ok(())
    }
}

/// Splits and decodes a token without checking its signature.
pub fn decode(token: &str) -> Result<UnverifiedToken<'_>, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed(
            "it must have three dot-separated parts",
        ));
    };
    let header: Value = B64URL
        .decode(header)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(JwtError::Malformed(
            "the header is not base64url-encoded JSON",
        ))?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err(JwtError::UnsupportedAlgorithm);
    }
    let kid = header.get("kid").and_then(Value::as_str).map(str::to_owned);
    let claims = match B64URL
        .decode(payload)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
    {
        Some(Value::Object(map)) => Claims(map),
        _ => {
            return Err(JwtError::Malformed(
                "the payload is not a base64url-encoded JSON object",
            ))
        }
    };
    let signature = B64URL
        .decode(signature)
        .map_err(|_| JwtError::Malformed("the signature is not base64url"))?;
    let signing_input = &token[..header_payload_len(token)];
    Ok(UnverifiedToken {
        signing_input,
        signature,
        kid,
        claims,
    })
}

fn header_payload_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(token.len())
}

impl UnverifiedToken<'_> {
    /// Checks the signature against every key, always computing all of them so the time taken
    /// does not say which key matched. Returns the index of the matching key.
    pub fn verify_signature(&self, keys: &[&[u8]]) -> Result<usize, JwtError> {
        let mut matched: u32 = 0;
        for (index, key) in keys.iter().enumerate() {
            let expected = hmac_sha256(key, self.signing_input.as_bytes());
            let equal = expected.as_slice().ct_eq(&self.signature);
            let candidate = u32::try_from(index + 1).unwrap_or(u32::MAX);
            matched = u32::conditional_select(&matched, &candidate, equal);
        }
        match matched {
            0 => Err(JwtError::BadSignature),
            n => Ok(n as usize - 1),
        }
    }
}

/// HMAC-SHA256 of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// Signs `claims` with HS256, with a `kid` header when given.
pub fn sign(claims: &Map<String, Value>, key: &[u8], kid: Option<&str>) -> String {
    let header = match kid {
        Some(kid) => serde_json::json!({"alg": "HS256", "kid": kid, "typ": "JWT"}),
        None => serde_json::json!({"alg": "HS256", "typ": "JWT"}),
    };
    let mut token = B64URL.encode(header.to_string());
    token.push('.');
    token.push_str(&B64URL.encode(Value::Object(claims.clone()).to_string()));
    let signature = hmac_sha256(key, token.as_bytes());
    token.push('.');
    token.push_str(&B64URL.encode(signature));
    token
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH";
    // Test vectors from the wire contract: a client token and a REST token signed with KEY.
    const CLIENT_TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJhdWQiOiJodHRwczovL2NvbnRvc28ud2VicHVic3ViLmF6dXJlLmNvbS9jbGllbnQvaHVicy9odWIxIiwiaWF0IjoxNzAwMDAwMDAwLCJleHAiOjE3MDAwMDM2MDAsInN1YiI6InVzZXIxIiwicm9sZSI6WyJ3ZWJwdWJzdWIuam9pbkxlYXZlR3JvdXAiLCJ3ZWJwdWJzdWIuc2VuZFRvR3JvdXAuZzEiXSwid2VicHVic3ViLmdyb3VwIjpbImcxIl19.lRsYsD0H4iGYdZYYqf28rhTRTb9NUO5GnO3RJt3k_IY";
    const REST_TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpYXQiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMzYwMCwiYXVkIjoiaHR0cHM6Ly9jb250b3NvLndlYnB1YnN1Yi5henVyZS5jb20vYXBpL2h1YnMvaHViMS86c2VuZD9hcGktdmVyc2lvbj0yMDI0LTEyLTAxIn0.LwbB9i6yPvUaVBmb8PuY2s6hbCee1QWedWCKruy6vDI";

    #[test]
    fn verifies_the_contract_vectors_with_the_key_as_utf8_bytes() {
        for token in [CLIENT_TOKEN, REST_TOKEN] {
            let decoded = decode(token).unwrap();
            assert_eq!(decoded.verify_signature(&[KEY.as_bytes()]), Ok(0));
            assert!(decoded.claims.validate_time(1_700_000_100, 0).is_ok());
            assert_eq!(
                decoded.claims.validate_time(1_700_003_600, 0),
                Err(JwtError::Expired)
            );
        }
        let client = decode(CLIENT_TOKEN).unwrap();
        assert_eq!(client.claims.subject(), Some("user1"));
        assert_eq!(
            client.claims.audiences(),
            vec!["https://contoso.webpubsub.azure.com/client/hubs/hub1"]
        );
    }

    #[test]
    fn tries_every_key_and_reports_which_matched() {
        let decoded = decode(REST_TOKEN).unwrap();
        assert_eq!(
            decoded.verify_signature(&[b"other".as_slice(), KEY.as_bytes()]),
            Ok(1)
        );
        assert_eq!(
            decoded.verify_signature(&[b"other".as_slice(), b"another".as_slice()]),
            Err(JwtError::BadSignature)
        );
        // The base64-decoded key is not the signing key.
        let decoded_key = B64URL.decode(KEY).unwrap_or_default();
        assert_eq!(
            decoded.verify_signature(&[decoded_key.as_slice()]),
            Err(JwtError::BadSignature)
        );
    }

    #[test]
    fn sign_then_verify() {
        let claims = json!({"aud": "http://h/api", "exp": 100})
            .as_object()
            .unwrap()
            .clone();
        let token = sign(&claims, b"k", Some("s-1"));
        let decoded = decode(&token).unwrap();
        assert_eq!(decoded.kid.as_deref(), Some("s-1"));
        assert_eq!(decoded.verify_signature(&[b"k".as_slice()]), Ok(0));
        assert_eq!(decoded.claims, Claims(claims));
    }

    #[test]
    fn refuses_other_algorithms_and_garbage() {
        let none = format!(
            "{}.{}.",
            B64URL.encode(r#"{"alg":"none","typ":"JWT"}"#),
            B64URL.encode(r#"{"exp":9999999999}"#)
        );
        assert_eq!(decode(&none).unwrap_err(), JwtError::UnsupportedAlgorithm);
        let hs512 = format!(
            "{}.{}.AAAA",
            B64URL.encode(r#"{"alg":"HS512"}"#),
            B64URL.encode(r#"{"exp":1}"#)
        );
        assert_eq!(decode(&hs512).unwrap_err(), JwtError::UnsupportedAlgorithm);
        assert!(matches!(decode("a.b.c"), Err(JwtError::Malformed(_))));
        assert!(matches!(
            decode("only-one-part"),
            Err(JwtError::Malformed(_))
        ));
        assert!(matches!(decode("a.b.c.d"), Err(JwtError::Malformed(_))));
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(decode(&long).unwrap_err(), JwtError::TooLong);
    }

    #[test]
    fn time_rules() {
        let claims = |v: Value| Claims(v.as_object().unwrap().clone());
        assert_eq!(
            claims(json!({"aud": "x"})).validate_time(0, 0),
            Err(JwtError::MissingExpiry)
        );
        assert_eq!(
            claims(json!({"exp": "soon"})).validate_time(0, 0),
            Err(JwtError::BadTimeClaim("exp"))
        );
        // Leeway tolerates a little skew either way.
        assert!(claims(json!({"exp": 100})).validate_time(120, 30).is_ok());
        assert_eq!(
            claims(json!({"exp": 100})).validate_time(130, 30),
            Err(JwtError::Expired)
        );
        assert!(claims(json!({"exp": 1000, "nbf": 150}))
            .validate_time(120, 30)
            .is_ok());
        assert_eq!(
            claims(json!({"exp": 1000, "nbf": 151})).validate_time(120, 30),
            Err(JwtError::NotYetValid)
        );
        // Fractional NumericDates are accepted.
        assert!(claims(json!({"exp": 100.5})).validate_time(99, 0).is_ok());
    }
}
