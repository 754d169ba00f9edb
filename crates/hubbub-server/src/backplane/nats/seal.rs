//! The cluster secret: what makes NATS a carrier rather than a party. Every node holds the same
//! secret, given in a file outside NATS (`cluster_secret_file`). With it:
//!
//! - every message between nodes carries a `Hubbub-Auth` header, an HMAC-SHA256 over its subject,
//!   its reply subject, a timestamp and its payload; a message without a valid one, or older (or
//!   newer) than [`FRESHNESS`], is dropped and counted. A process that can publish on the
//!   subjects cannot inject deliveries, answer questions, or take a reliable session: the reply
//!   subject is covered, so a captured question cannot be redirected to the attacker's inbox.
//! - every value the nodes keep in NATS (the key ring, hub settings, usage counters, notice
//!   claims, audit events) is sealed with AES-256-GCM, bound to the bucket and key it was
//!   written under: unreadable to NATS, and a value written by anyone else is refused.
//!
//! The file holds one secret per line (at least 32 characters; `#` comments and blank lines are
//! skipped). The first signs and seals; every line is accepted, so the secret can be rotated
//! without downtime: add the new one as a second line on every node, then move it first, then
//! drop the old one.

use base64::Engine;
use ring::{aead, hmac, rand::SecureRandom};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;

/// The header that authenticates a message between nodes.
pub const AUTH_HEADER: &str = "Hubbub-Auth";
/// How far a message's timestamp may be from this node's clock (node clocks must agree within
/// it); a captured message can be replayed only within this window, to the same subject.
pub const FRESHNESS: Duration = Duration::from_secs(60);
/// The shortest secret accepted, in characters.
pub const MIN_SECRET_LEN: usize = 32;
/// The most secrets one file may list (the current one and those still accepted).
const MAX_SECRETS: usize = 8;
const SEALED_PREFIX: &[u8] = b"hbs1";
const NONCE_LEN: usize = 12;

/// Keys derived from one cluster secret.
struct Derived {
    mac: hmac::Key,
    aead: aead::LessSafeKey,
}

impl Derived {
    fn new(secret: &[u8]) -> Self {
        let root = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let mac = hmac::sign(&root, b"hubbub cluster bus mac v1");
        let seal = hmac::sign(&root, b"hubbub cluster store seal v1");
        let unbound = aead::UnboundKey::new(&aead::AES_256_GCM, seal.as_ref())
            .expect("an HMAC-SHA256 output is an AES-256 key");
        Self {
            mac: hmac::Key::new(hmac::HMAC_SHA256, mac.as_ref()),
            aead: aead::LessSafeKey::new(unbound),
        }
    }
}

/// Why a message or a stored value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `Hubbub-Auth` header, or one that is not `1.<time>.<mac>`.
    Unsigned,
    /// Signed with no secret this node has, or altered.
    BadSignature,
    /// Older or newer than [`FRESHNESS`].
    Stale,
    /// A stored value that is not sealed, or not with a secret this node has.
    Unsealed,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Unsigned => "unsigned",
            Refusal::BadSignature => "bad_signature",
            Refusal::Stale => "stale",
            Refusal::Unsealed => "unsealed",
        }
    }
}

/// The cluster's secrets; the first signs and seals, all are accepted. Never printed.
pub struct ClusterSecret {
    keys: Vec<Derived>,
    rng: ring::rand::SystemRandom,
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterSecret({} secret(s), redacted)", self.keys.len())
    }
}

impl ClusterSecret {
    /// Reads the secret file. The message of an error names the file, never its content.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read the cluster secret file {}: {e}",
                path.display()
            )
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(
                        file = %path.display(),
                        "the cluster secret file can be read by other users; chmod 600 it"
                    );
                }
            }
        }
        Self::from_text(&text)
            .map_err(|e| format!("the cluster secret file {}: {e}", path.display()))
    }

    /// One secret per line; `#` comments and blank lines are skipped.
    pub fn from_text(text: &str) -> Result<Self, String> {
        let secrets: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        if secrets.is_empty() {
            return Err("it holds no secret (one per line, at least 32 characters; make one with `openssl rand -base64 32`)".into());
        }
        if secrets.len() > MAX_SECRETS {
            return Err(format!(
                "it lists {} secrets; at most {MAX_SECRETS}",
                secrets.len()
            ));
        }
        if let Some(line) = secrets
            .iter()
            .position(|s| s.chars().count() < MIN_SECRET_LEN)
        {
            return Err(format!(
                "secret {} is shorter than {MIN_SECRET_LEN} characters (make one with `openssl rand -base64 32`)",
                line + 1
            ));
        }
        Ok(Self {
            keys: secrets.iter().map(|s| Derived::new(s.as_bytes())).collect(),
            rng: ring::rand::SystemRandom::new(),
        })
    }

    fn mac(
        key: &hmac::Key,
        subject: &str,
        reply: Option<&str>,
        at_ms: u64,
        payload: &[u8],
    ) -> hmac::Tag {
        let reply = reply.unwrap_or("");
        let mut context = hmac::Context::with_key(key);
        context.update(&(subject.len() as u64).to_be_bytes());
        context.update(subject.as_bytes());
        context.update(&(reply.len() as u64).to_be_bytes());
        context.update(reply.as_bytes());
        context.update(&at_ms.to_be_bytes());
        context.update(payload);
        context.sign()
    }

    /// The headers that authenticate `payload` published on `subject` (with `reply`, if any).
    pub fn sign(
        &self,
        subject: &str,
        reply: Option<&str>,
        payload: &[u8],
    ) -> async_nats::HeaderMap {
        let at_ms = now_ms();
        let tag = Self::mac(&self.keys[0].mac, subject, reply, at_ms, payload);
        let value = format!(
            "1.{at_ms}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
        );
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(AUTH_HEADER, value.as_str());
        headers
    }

    /// Whether a message between nodes is authentic and fresh.
    pub fn verify(&self, message: &async_nats::Message) -> Result<(), Refusal> {
        let value = message
            .headers
            .as_ref()
            .and_then(|h| h.get(AUTH_HEADER))
            .ok_or(Refusal::Unsigned)?;
        self.verify_parts(
            message.subject.as_str(),
            message.reply.as_deref(),
            value.as_str(),
            &message.payload,
            now_ms(),
        )
    }

    fn verify_parts(
        &self,
        subject: &str,
        reply: Option<&str>,
        header: &str,
        payload: &[u8],
        now_ms: u64,
    ) -> Result<(), Refusal> {
        let mut parts = header.splitn(3, '.');
        let (Some("1"), Some(at), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Refusal::Unsigned);
        };
        let at_ms: u64 = at.parse().map_err(|_| Refusal::Unsigned)?;
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| Refusal::Unsigned)?;
        // Compared in constant time.
        let authentic = self.keys.iter().any(|k| {
            let expected = Self::mac(&k.mac, subject, reply, at_ms, payload);
            bool::from(expected.as_ref().ct_eq(&tag))
        });
        if !authentic {
            return Err(Refusal::BadSignature);
        }
        let window = u64::try_from(FRESHNESS.as_millis()).unwrap_or(u64::MAX);
        if now_ms.abs_diff(at_ms) > window {
            return Err(Refusal::Stale);
        }
        Ok(())
    }

    /// `plaintext` sealed for keeping in NATS under `context` (the bucket and key, or stream).
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> bytes::Bytes {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .expect("the system's random source works");
        let mut sealed = plaintext.to_vec();
        self.keys[0]
            .aead
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(context.as_bytes()),
                &mut sealed,
            )
            .expect("a value of any size below 64 GiB can be sealed");
        let mut out = Vec::with_capacity(SEALED_PREFIX.len() + NONCE_LEN + sealed.len());
        out.extend_from_slice(SEALED_PREFIX);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out.into()
    }

    /// The plaintext of a value sealed under `context` with any of this node's secrets.
    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, Refusal> {
        let rest = sealed
            .strip_prefix(SEALED_PREFIX)
            .filter(|r| r.len() >= NONCE_LEN + aead::AES_256_GCM.tag_len())
            .ok_or(Refusal::Unsealed)?;
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| Refusal::Unsealed)?;
        self.keys
            .iter()
            .find_map(|k| {
                let mut buffer = body.to_vec();
                let plain = k
                    .aead
                    .open_in_place(
                        aead::Nonce::assume_unique_for_key(nonce),
                        aead::Aad::from(context.as_bytes()),
                        &mut buffer,
                    )
                    .ok()?;
                Some(plain.to_vec())
            })
            .ok_or(Refusal::Unsealed)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "a-cluster-secret-of-at-least-32-characters";
    const B: &str = "another-cluster-secret-32-characters-long";

    fn header_of(headers: &async_nats::HeaderMap) -> String {
        headers.get(AUTH_HEADER).unwrap().as_str().to_string()
    }

    #[test]
    fn secret_files_need_long_secrets_and_never_show_them() {
        assert!(ClusterSecret::from_text("").is_err());
        assert!(ClusterSecret::from_text("# only a comment\n\n").is_err());
        let err = ClusterSecret::from_text("short-secret").unwrap_err();
        assert!(
            err.contains("shorter than 32") && !err.contains("short-secret"),
            "{err}"
        );
        let err = ClusterSecret::from_text(&format!("{A}\nshort")).unwrap_err();
        assert!(err.contains("secret 2"), "{err}");
        let many = [A; MAX_SECRETS + 1].join("\n");
        assert!(ClusterSecret::from_text(&many).is_err());
        let secret = ClusterSecret::from_text(&format!("# current\n{A}\n\n{B}\n")).unwrap();
        let shown = format!("{secret:?}");
        assert!(!shown.contains(A) && shown.contains("2 secret"), "{shown}");
    }

    #[test]
    fn messages_verify_with_any_listed_secret_and_nothing_else() {
        let a = ClusterSecret::from_text(A).unwrap();
        let b_then_a = ClusterSecret::from_text(&format!("{B}\n{A}")).unwrap();
        let b = ClusterSecret::from_text(B).unwrap();
        let now = now_ms();
        let signed = header_of(&a.sign("hubbub.m.x", Some("_INBOX.1"), b"hello"));
        let check = |s: &ClusterSecret, subject, reply, header: &str, payload: &[u8], at| {
            s.verify_parts(subject, reply, header, payload, at)
        };
        assert_eq!(
            check(&a, "hubbub.m.x", Some("_INBOX.1"), &signed, b"hello", now),
            Ok(())
        );
        assert_eq!(
            check(
                &b_then_a,
                "hubbub.m.x",
                Some("_INBOX.1"),
                &signed,
                b"hello",
                now
            ),
            Ok(())
        );
        let bad = Err(Refusal::BadSignature);
        assert_eq!(
            check(&b, "hubbub.m.x", Some("_INBOX.1"), &signed, b"hello", now),
            bad
        );
        assert_eq!(
            check(&a, "hubbub.m.y", Some("_INBOX.1"), &signed, b"hello", now),
            bad,
            "subject"
        );
        assert_eq!(
            check(&a, "hubbub.m.x", Some("_INBOX.2"), &signed, b"hello", now),
            bad,
            "reply"
        );
        assert_eq!(
            check(&a, "hubbub.m.x", None, &signed, b"hello", now),
            bad,
            "no reply"
        );
        assert_eq!(
            check(&a, "hubbub.m.x", Some("_INBOX.1"), &signed, b"hellO", now),
            bad,
            "payload"
        );
        // A changed timestamp breaks the signature; an old one is stale.
        let (_, rest) = signed.split_once('.').unwrap();
        let (at, tag) = rest.split_once('.').unwrap();
        let moved = format!("1.{}.{tag}", at.parse::<u64>().unwrap() + 1);
        assert_eq!(
            check(&a, "hubbub.m.x", Some("_INBOX.1"), &moved, b"hello", now),
            bad
        );
        let later = now + FRESHNESS.as_millis() as u64 + 1_000;
        assert_eq!(
            check(&a, "hubbub.m.x", Some("_INBOX.1"), &signed, b"hello", later),
            Err(Refusal::Stale)
        );
        for garbage in ["", "1", "2.5.abc", "1.x.abc", "1.5.!!!"] {
            assert_eq!(
                check(&a, "s", None, garbage, b"", now),
                Err(Refusal::Unsigned),
                "{garbage}"
            );
        }
        let unsigned = async_nats::Message {
            subject: "s".into(),
            reply: None,
            payload: bytes::Bytes::new(),
            headers: None,
            status: None,
            description: None,
            length: 0,
        };
        assert_eq!(a.verify(&unsigned), Err(Refusal::Unsigned));
    }

    #[test]
    fn sealed_values_open_only_in_their_place_with_a_listed_secret() {
        let a = ClusterSecret::from_text(A).unwrap();
        let sealed = a.seal("hubbub_keys/ring", b"{\"primary\":\"KEY\"}");
        assert!(
            !sealed.windows(3).any(|w| w == b"KEY"),
            "the value is encrypted"
        );
        assert_ne!(
            sealed,
            a.seal("hubbub_keys/ring", b"{\"primary\":\"KEY\"}"),
            "fresh nonce"
        );
        assert_eq!(
            a.open("hubbub_keys/ring", &sealed).unwrap(),
            b"{\"primary\":\"KEY\"}"
        );
        let rotating = ClusterSecret::from_text(&format!("{B}\n{A}")).unwrap();
        assert!(rotating.open("hubbub_keys/ring", &sealed).is_ok());
        let other = ClusterSecret::from_text(B).unwrap();
        assert_eq!(
            other.open("hubbub_keys/ring", &sealed),
            Err(Refusal::Unsealed)
        );
        assert_eq!(
            a.open("hubbub_hubs/chat", &sealed),
            Err(Refusal::Unsealed),
            "moved"
        );
        let mut flipped = sealed.to_vec();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(a.open("hubbub_keys/ring", &flipped), Err(Refusal::Unsealed));
        for plain in [&b"{\"generation\":9}"[..], b"", b"hbs1", b"hbs1short"] {
            assert_eq!(a.open("hubbub_keys/ring", plain), Err(Refusal::Unsealed));
        }
    }
}
