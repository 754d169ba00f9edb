//! The verifier against real issuers: small HTTP servers serving discovery and a JWKS, signing
//! ES256 tokens with keys they generate, and rotating them.

use super::*;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;

/// A signing key with its `kid`.
struct SigningKey {
    kid: String,
    pair: EcdsaKeyPair,
}

impl SigningKey {
    fn new(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        Self {
            kid: kid.into(),
            pair,
        }
    }

    fn jwk(&self) -> Value {
        let public = self.pair.public_key().as_ref();
        json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(&public[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&public[33..65]),
        })
    }

    fn sign(&self, header: Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    fn token(&self, claims: &Value) -> String {
        self.sign(
            json!({"alg": "ES256", "typ": "JWT", "kid": self.kid}),
            claims,
        )
    }
}

/// An issuer on a loopback port: discovery at `/.well-known/openid-configuration`, keys at
/// `/keys`, which the test may change; counts key-set fetches.
struct Issuer {
    url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<std::sync::atomic::AtomicUsize>,
    /// While set, `/keys` answers 500.
    broken: Arc<std::sync::atomic::AtomicBool>,
}

impl Issuer {
    async fn start(keys: Vec<Value>) -> Self {
        use axum::routing::get;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let keys = Arc::new(Mutex::new(keys));
        let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let broken = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (served, counted, issuer) = (Arc::clone(&keys), Arc::clone(&fetches), url.clone());
        let failing = Arc::clone(&broken);
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || {
                    let issuer = issuer.clone();
                    async move {
                        axum::Json(json!({"issuer": issuer, "jwks_uri": format!("{issuer}/keys")}))
                    }
                }),
            )
            .route(
                "/keys",
                get(move || {
                    use axum::response::IntoResponse;
                    let keys = served.lock().unwrap().clone();
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let broken = failing.load(std::sync::atomic::Ordering::SeqCst);
                    async move {
                        if broken {
                            axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
                        } else {
                            axum::Json(json!({ "keys": keys })).into_response()
                        }
                    }
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url,
            keys,
            fetches,
            broken,
        }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn now_ms() -> UnixMillis {
    crate::clock::SystemClock.now_millis()
}

use crate::clock::Clock;

fn claims(issuer: &str, roles: &[&str]) -> Value {
    let now = now_ms() / 1000;
    json!({
        "iss": issuer, "sub": "app-1", "aud": DEFAULT_AUDIENCE,
        "iat": now, "nbf": now, "exp": now + 600, "roles": roles,
    })
}

fn verifier(issuers: &[&Issuer]) -> Oidc {
    Oidc::new(OidcSettings::new(
        issuers
            .iter()
            .map(|i| IssuerSettings {
                issuer: i.url.clone(),
                jwks_url: None,
            })
            .collect(),
    ))
}

#[tokio::test]
async fn a_token_of_a_trusted_issuer_is_verified_and_its_roles_grant() {
    let key = SigningKey::new("k1");
    let issuer = Issuer::start(vec![key.jwk()]).await;
    let oidc = verifier(&[&issuer]);
    oidc.fetch_all().await;
    let owner = oidc
        .verify(&key.token(&claims(&issuer.url, &[OWNER_ROLE])), now_ms())
        .await
        .unwrap();
    assert_eq!(
        owner,
        Identity {
            issuer: issuer.url.clone(),
            subject: "app-1".into(),
            grant: Some(Grant::Owner),
            admin: false,
        }
    );
    let reader = oidc
        .verify(
            &key.token(&claims(&issuer.url, &[READER_ROLE, ADMIN_ROLE])),
            now_ms(),
        )
        .await
        .unwrap();
    assert_eq!((reader.grant, reader.admin), (Some(Grant::Reader), true));
    assert!(allows(reader.grant, &axum::http::Method::HEAD));
    assert!(!allows(reader.grant, &axum::http::Method::POST));
    let nobody = oidc
        .verify(
            &key.token(&claims(&issuer.url, &["Something Else"])),
            now_ms(),
        )
        .await
        .unwrap();
    assert_eq!(nobody.grant, None);
    assert!(!allows(nobody.grant, &axum::http::Method::GET));
    assert_eq!(issuer.fetches(), 1, "verifying needs no fetch per token");
}

#[tokio::test]
async fn another_issuers_key_with_the_same_kid_never_verifies() {
    let ours = SigningKey::new("shared-kid");
    let theirs = SigningKey::new("shared-kid");
    let trusted = Issuer::start(vec![ours.jwk()]).await;
    let other = Issuer::start(vec![theirs.jwk()]).await;
    let oidc = verifier(&[&trusted, &other]);
    oidc.fetch_all().await;
    // The other issuer's key signs a token claiming to come from the trusted issuer.
    let forged = theirs.token(&claims(&trusted.url, &[OWNER_ROLE]));
    assert_eq!(
        oidc.verify(&forged, now_ms()).await,
        Err(OidcError::BadSignature)
    );
    // Each issuer's own tokens pass.
    for (key, issuer) in [(&ours, &trusted), (&theirs, &other)] {
        let token = key.token(&claims(&issuer.url, &[OWNER_ROLE]));
        assert!(oidc.verify(&token, now_ms()).await.is_ok());
    }
    // An issuer nobody configured, with a key of its own, is refused before any key is looked at.
    let stranger = Issuer::start(vec![theirs.jwk()]).await;
    let token = theirs.token(&claims(&stranger.url, &[OWNER_ROLE]));
    assert_eq!(
        oidc.verify(&token, now_ms()).await,
        Err(OidcError::UntrustedIssuer)
    );
    assert_eq!(stranger.fetches(), 0);
}

#[tokio::test]
async fn each_check_refuses_with_its_reason() {
    let key = SigningKey::new("k1");
    let issuer = Issuer::start(vec![key.jwk()]).await;
    let oidc = verifier(&[&issuer]);
    oidc.fetch_all().await;
    let good = claims(&issuer.url, &[OWNER_ROLE]);
    let with = |field: &str, value: Value| {
        let mut c = good.clone();
        c[field] = value;
        c
    };
    let now = now_ms() / 1000;
    let cases = [
        (
            key.token(&with("aud", json!("https://elsewhere"))),
            "audience",
        ),
        (key.token(&with("exp", json!(now - 3600))), "expired"),
        (key.token(&with("nbf", json!(now + 3600))), "not_yet_valid"),
        (
            key.token(&{
                let mut c = good.clone();
                c.as_object_mut().unwrap().remove("exp");
                c
            }),
            "missing_expiry",
        ),
        (
            key.sign(json!({"alg": "none", "kid": "k1"}), &good),
            "algorithm",
        ),
        (
            key.sign(json!({"alg": "ES256", "kid": "nope"}), &good),
            "unknown_key",
        ),
        ("not.a.jwt.at.all".to_string(), "malformed"),
    ];
    for (token, reason) in cases {
        let refused = oidc.verify(&token, now_ms()).await.unwrap_err();
        assert_eq!(refused.reason(), reason, "{refused}");
        assert!(!refused.to_string().contains(&token), "never the token");
    }
    // HS256 "signed" with the issuer's public key (the classic confusion): never an HMAC.
    let public = key.jwk().to_string();
    let claims_json = good.to_string();
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","kid":"k1"}"#),
        URL_SAFE_NO_PAD.encode(&claims_json)
    );
    let mac = hubbub_proto::jwt::hmac_sha256(public.as_bytes(), input.as_bytes());
    let confused = format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac));
    assert_eq!(
        oidc.verify(&confused, now_ms()).await.unwrap_err().reason(),
        "algorithm"
    );
    assert!(
        !is_identity_token(&confused),
        "HS256 goes to the access keys"
    );
    assert!(is_identity_token(&key.token(&good)));
    // A tampered payload does not verify.
    let token = key.token(&good);
    let mut pieces: Vec<&str> = token.split('.').collect();
    let tampered_claims = URL_SAFE_NO_PAD.encode(with("sub", json!("admin")).to_string());
    pieces[1] = &tampered_claims;
    assert_eq!(
        oidc.verify(&pieces.join("."), now_ms()).await,
        Err(OidcError::BadSignature)
    );
}

#[tokio::test]
async fn a_rotated_key_is_fetched_on_first_use_and_a_removed_one_refused() {
    let old = SigningKey::new("old");
    let issuer = Issuer::start(vec![old.jwk()]).await;
    let oidc = verifier(&[&issuer]);
    oidc.fetch_all().await;
    let old_token = old.token(&claims(&issuer.url, &[OWNER_ROLE]));
    assert!(oidc.verify(&old_token, now_ms()).await.is_ok());

    // The issuer rotates: only the new key is published now.
    let new = SigningKey::new("new");
    *issuer.keys.lock().unwrap() = vec![new.jwk()];
    let new_token = new.token(&claims(&issuer.url, &[OWNER_ROLE]));
    assert!(
        oidc.verify(&new_token, now_ms()).await.is_ok(),
        "fetched on first use"
    );
    assert_eq!(issuer.fetches(), 2);
    assert_eq!(
        oidc.verify(&old_token, now_ms()).await,
        Err(OidcError::UnknownKey),
        "the removed key no longer verifies"
    );
    // Unknown kids do not make the verifier fetch again within a minute.
    let stranger = SigningKey::new("stranger");
    for _ in 0..5 {
        let token = stranger.token(&claims(&issuer.url, &[OWNER_ROLE]));
        assert_eq!(
            oidc.verify(&token, now_ms()).await,
            Err(OidcError::UnknownKey)
        );
    }
    assert_eq!(issuer.fetches(), 2, "at most one fetch a minute");
}

#[tokio::test]
async fn a_first_fetch_made_for_a_token_does_not_use_up_the_refresh_for_a_rotated_key() {
    let old = SigningKey::new("old");
    let issuer = Issuer::start(vec![old.jwk()]).await;
    // No fetch at start: the first token fetches the keys.
    let oidc = verifier(&[&issuer]);
    let token = old.token(&claims(&issuer.url, &[OWNER_ROLE]));
    assert!(oidc.verify(&token, now_ms()).await.is_ok());
    assert_eq!(issuer.fetches(), 1);
    let new = SigningKey::new("new");
    *issuer.keys.lock().unwrap() = vec![new.jwk()];
    let rotated = new.token(&claims(&issuer.url, &[OWNER_ROLE]));
    assert!(
        oidc.verify(&rotated, now_ms()).await.is_ok(),
        "refreshed at once"
    );
    assert_eq!(issuer.fetches(), 2);
}

#[tokio::test]
async fn a_failed_fetch_keeps_the_known_keys() {
    let key = SigningKey::new("k1");
    let issuer = Issuer::start(vec![key.jwk()]).await;
    let mut settings = OidcSettings::new(vec![IssuerSettings {
        issuer: issuer.url.clone(),
        jwks_url: Some(format!("{}/keys", issuer.url)),
    }]);
    settings.audiences = vec!["api://hubbub".into()];
    let oidc = Oidc::new(settings);
    oidc.fetch_all().await;
    let mut c = claims(&issuer.url, &[OWNER_ROLE]);
    c["aud"] = json!(["api://hubbub", "other"]);
    assert!(oidc.verify(&key.token(&c), now_ms()).await.is_ok());
    // The issuer fails; a fetch prompted by an unknown kid fails too, and the known key stays.
    issuer
        .broken
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let unknown = SigningKey::new("unknown").token(&c);
    assert_eq!(
        oidc.verify(&unknown, now_ms()).await,
        Err(OidcError::UnknownKey)
    );
    assert_eq!(issuer.fetches(), 2, "it did try");
    assert!(oidc.verify(&key.token(&c), now_ms()).await.is_ok());
    // A set with no usable key is a failure as well, never an empty key ring.
    issuer
        .broken
        .store(false, std::sync::atomic::Ordering::SeqCst);
    *issuer.keys.lock().unwrap() = vec![json!({"kty": "oct", "kid": "x", "k": "AAAA"})];
    let fresh = Oidc::new(OidcSettings::new(vec![IssuerSettings {
        issuer: issuer.url.clone(),
        jwks_url: None,
    }]));
    fresh.fetch_all().await;
    assert_eq!(
        fresh
            .verify(&key.token(&claims(&issuer.url, &[OWNER_ROLE])), now_ms())
            .await,
        Err(OidcError::UnknownKey)
    );
}
