//! `AppState`: the cheap-to-clone handles every request handler needs.

use crate::keys::Keys;
use crate::secret::Secret;
use hubbub_proto::audience::PublicEndpoint;
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct AppState {
    pub keys: Keys,
    /// Every public endpoint; the first one is used in connection strings.
    pub endpoints: Arc<[PublicEndpoint]>,
    pub admin_token: Arc<Secret>,
    pub token_leeway_secs: i64,
}

impl AppState {
    /// The endpoint written into connection strings.
    pub fn primary_endpoint(&self) -> String {
        self.endpoints
            .first()
            .map(PublicEndpoint::url)
            .unwrap_or_default()
    }
}
