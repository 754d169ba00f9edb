//! `Secret`: a key or token string that never prints and compares in constant time.

use std::fmt;
use subtle::ConstantTimeEq;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// 32 bytes from the operating system's secure random source, base64-encoded (44 characters,
    /// never a `;`, so it is safe inside a connection string).
    pub fn generate() -> Result<Self, getrandom::Error> {
        use base64::Engine;
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes)?;
        Ok(Self(
            base64::engine::general_purpose::STANDARD.encode(bytes),
        ))
    }

    /// The secret text. Call sites are the few places that must use it: signing, verifying,
    /// storing, and answering an authenticated admin.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison with an offered value.
    pub fn matches(&self, offered: &str) -> bool {
        self.0.as_bytes().ct_eq(offered.as_bytes()).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// The admin token in force: checked in constant time, replaced whole when it is rotated.
pub struct AdminToken(arc_swap::ArcSwap<Secret>);

impl AdminToken {
    pub fn new(token: Secret) -> Self {
        Self(arc_swap::ArcSwap::from_pointee(token))
    }

    pub fn matches(&self, offered: &str) -> bool {
        self.0.load().matches(offered)
    }

    /// The token in force (to write it where the operator reads it).
    pub fn current(&self) -> std::sync::Arc<Secret> {
        self.0.load_full()
    }

    /// From now on only `token` is the admin token.
    pub fn replace(&self, token: Secret) {
        self.0.store(std::sync::Arc::new(token));
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_44_char_base64_of_32_bytes() {
        use base64::Engine;
        let a = Secret::generate().unwrap();
        let b = Secret::generate().unwrap();
        assert_eq!(a.expose().len(), 44);
        assert_ne!(a, b);
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.expose())
            .unwrap();
        assert_eq!(raw.len(), 32);
        assert!(!a.expose().contains(';'));
    }

    #[test]
    fn never_printed_and_compared_exactly() {
        let s = Secret::new("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(s.matches("hunter2"));
        assert!(!s.matches("hunter"));
        assert!(!s.matches("hunter22"));
    }
}
