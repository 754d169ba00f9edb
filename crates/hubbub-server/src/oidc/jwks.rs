//! Public keys of an identity provider: JWKs parsed into what `ring` verifies with, and the
//! signature check for each algorithm Hubbub accepts. Only asymmetric algorithms: a token that
//! names `none` or an HMAC algorithm never reaches a key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::Value;

/// Keys kept per issuer; a JWKS with more is cut (providers publish a handful).
pub const MAX_KEYS: usize = 64;

/// The algorithms accepted in identity-provider tokens.
pub const ALGORITHMS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// A verification key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// An uncompressed point (0x04 ‖ x ‖ y) on `crv`.
    Ec {
        crv: String,
        point: Vec<u8>,
    },
    Ed25519 {
        x: Vec<u8>,
    },
}

/// One key of a JWKS, by `kid`, with the algorithm it is restricted to (if it says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwk {
    pub kid: String,
    pub alg: Option<String>,
    pub key: PublicKey,
}

fn field(value: &Value, name: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(value.get(name)?.as_str()?.trim_end_matches('='))
        .ok()
}

impl Jwk {
    /// A JWK object; `None` for keys Hubbub cannot use (no `kid`, encryption keys, unknown
    /// types, symmetric keys, malformed parameters).
    pub fn parse(value: &Value) -> Option<Jwk> {
        let text = |name: &str| value.get(name).and_then(Value::as_str);
        if text("use").is_some_and(|u| u != "sig") {
            return None;
        }
        let kid = text("kid")?.to_string();
        let key = match text("kty")? {
            "RSA" => PublicKey::Rsa {
                n: field(value, "n")?,
                e: field(value, "e")?,
            },
            "EC" => {
                let crv = text("crv")?.to_string();
                let (x, y) = (field(value, "x")?, field(value, "y")?);
                let size = match crv.as_str() {
                    "P-256" => 32,
                    "P-384" => 48,
                    _ => return None,
                };
                if x.len() != size || y.len() != size {
                    return None;
                }
                let mut point = Vec::with_capacity(1 + 2 * size);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                PublicKey::Ec { crv, point }
            }
            "OKP" if text("crv") == Some("Ed25519") => PublicKey::Ed25519 {
                x: field(value, "x")?,
            },
            // "oct" (a shared secret) and anything else: never a verification key here.
            _ => return None,
        };
        Some(Jwk {
            kid,
            alg: text("alg").map(str::to_owned),
            key,
        })
    }

    /// Checks `signature` over `message` with this key for `alg` (the token header's). False
    /// when the key does not fit the algorithm, or is restricted to another one.
    pub fn verifies(&self, alg: &str, message: &[u8], sig: &[u8]) -> bool {
        if self.alg.as_deref().is_some_and(|a| a != alg) {
            return false;
        }
        match (&self.key, alg) {
            (PublicKey::Rsa { n, e }, _) => {
                let params: &signature::RsaParameters = match alg {
                    "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                    "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
                    "RS512" => &signature::RSA_PKCS1_2048_8192_SHA512,
                    "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
                    "PS384" => &signature::RSA_PSS_2048_8192_SHA384,
                    "PS512" => &signature::RSA_PSS_2048_8192_SHA512,
                    _ => return false,
                };
                RsaPublicKeyComponents { n, e }
                    .verify(params, message, sig)
                    .is_ok()
            }
            (PublicKey::Ec { crv, point }, _) => {
                let params: &signature::EcdsaVerificationAlgorithm = match (crv.as_str(), alg) {
                    ("P-256", "ES256") => &signature::ECDSA_P256_SHA256_FIXED,
                    ("P-384", "ES384") => &signature::ECDSA_P384_SHA384_FIXED,
                    _ => return false,
                };
                UnparsedPublicKey::new(params, point)
                    .verify(message, sig)
                    .is_ok()
            }
            (PublicKey::Ed25519 { x }, "EdDSA") => UnparsedPublicKey::new(&signature::ED25519, x)
                .verify(message, sig)
                .is_ok(),
            (PublicKey::Ed25519 { .. }, _) => false,
        }
    }
}

/// The usable keys of a JWKS document (`{"keys": [...]}`), at most [`MAX_KEYS`].
pub fn parse_set(document: &Value) -> Vec<Jwk> {
    document
        .get("keys")
        .and_then(Value::as_array)
        .map(|keys| keys.iter().filter_map(Jwk::parse).take(MAX_KEYS).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair};

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn es256_keys_verify_their_signatures_only() {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        let public = pair.public_key().as_ref();
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig",
            "x": b64(&public[1..33]), "y": b64(&public[33..65]),
        });
        let key = Jwk::parse(&jwk).expect("a P-256 key");
        let sig = pair.sign(&rng, b"header.payload").unwrap();
        assert!(key.verifies("ES256", b"header.payload", sig.as_ref()));
        assert!(!key.verifies("ES256", b"header.other", sig.as_ref()));
        assert!(!key.verifies("ES384", b"header.payload", sig.as_ref()));
        assert!(!key.verifies("RS256", b"header.payload", sig.as_ref()));
        assert!(!key.verifies("HS256", b"header.payload", sig.as_ref()));
        let restricted = Jwk {
            alg: Some("ES384".into()),
            ..key.clone()
        };
        assert!(!restricted.verifies("ES256", b"header.payload", sig.as_ref()));
    }

    #[test]
    fn symmetric_encryption_and_malformed_keys_are_not_verification_keys() {
        for jwk in [
            serde_json::json!({"kty": "oct", "kid": "s", "k": "c2VjcmV0"}),
            serde_json::json!({"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"}),
            serde_json::json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"}),
            serde_json::json!({"kty": "EC", "kid": "e", "crv": "P-256", "x": "AQAB", "y": "AQAB"}),
            serde_json::json!({"kty": "EC", "kid": "e", "crv": "secp256k1", "x": "AQAB", "y": "AQAB"}),
        ] {
            assert_eq!(Jwk::parse(&jwk), None, "{jwk}");
        }
        let many: Vec<Value> = (0..MAX_KEYS + 10)
            .map(|i| serde_json::json!({"kty": "RSA", "kid": i.to_string(), "n": "AQAB", "e": "AQAB"}))
            .collect();
        assert_eq!(
            parse_set(&serde_json::json!({ "keys": many })).len(),
            MAX_KEYS
        );
    }
}
