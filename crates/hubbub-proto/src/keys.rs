//! Key slots and the `WebPubSubKeys` shape returned by `az webpubsub key show` and ARM `listKeys`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The three regenerable secrets of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeySlot {
    Primary,
    Secondary,
    /// Signs what the service issues itself (reconnection tokens, `:generateToken` tokens).
    Salt,
}

impl KeySlot {
    pub const ALL: [KeySlot; 3] = [KeySlot::Primary, KeySlot::Secondary, KeySlot::Salt];

    /// Lower-case name used in storage, the CLI and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            KeySlot::Primary => "primary",
            KeySlot::Secondary => "secondary",
            KeySlot::Salt => "salt",
        }
    }
}

impl fmt::Display for KeySlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown key type '{0}': expected Primary, Secondary or Salt")]
pub struct UnknownKeySlot(pub String);

impl FromStr for KeySlot {
    type Err = UnknownKeySlot;

    /// Case-insensitive, as the ARM API and the Azure CLI accept it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "primary" => Ok(KeySlot::Primary),
            "secondary" => Ok(KeySlot::Secondary),
            "salt" => Ok(KeySlot::Salt),
            _ => Err(UnknownKeySlot(s.chars().take(64).collect())),
        }
    }
}

/// `WebPubSubKeys`: exactly what `listKeys` and `az webpubsub key show` return.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebPubSubKeys {
    pub primary_key: String,
    pub secondary_key: String,
    pub primary_connection_string: String,
    pub secondary_connection_string: String,
}

impl fmt::Debug for WebPubSubKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebPubSubKeys([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_types_parse_case_insensitively() {
        assert_eq!("Primary".parse::<KeySlot>(), Ok(KeySlot::Primary));
        assert_eq!("SECONDARY".parse::<KeySlot>(), Ok(KeySlot::Secondary));
        assert_eq!("salt".parse::<KeySlot>(), Ok(KeySlot::Salt));
        assert!("tertiary".parse::<KeySlot>().is_err());
    }

    #[test]
    fn web_pub_sub_keys_uses_arm_field_names() {
        let keys = WebPubSubKeys {
            primary_key: "p".into(),
            secondary_key: "s".into(),
            primary_connection_string: "pc".into(),
            secondary_connection_string: "sc".into(),
        };
        let json = serde_json::to_value(&keys).unwrap();
        let mut names: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        names.sort();
        assert_eq!(
            names,
            [
                "primaryConnectionString",
                "primaryKey",
                "secondaryConnectionString",
                "secondaryKey"
            ]
        );
        assert!(!format!("{keys:?}").contains("pc"));
    }
}
