//! Error bodies: the Azure `ErrorDetail` JSON (`{"code","message"}`) that every data-plane and
//! admin error carries, with the same code in the `x-ms-error-code` header.

use serde::{Deserialize, Serialize};

/// Header that repeats the error code, as the Azure service sends it.
pub const ERROR_CODE_HEADER: &str = "x-ms-error-code";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub target: Option<String>,
}

impl ErrorDetail {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            target: None,
        }
    }
}

/// The ARM (management plane) error envelope: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArmError {
    pub error: ErrorDetail,
}
