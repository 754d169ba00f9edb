//! Group streams as their publisher's connection keeps them: which group each open stream goes
//! to, the next fragment it expects, and when it was last heard from. The frames themselves
//! travel as ordinary group messages carrying a [`StreamInfo`], so they reach every member on
//! every node, in order, and through reliable replay.
//!
//! [`StreamInfo`]: hubbub_proto::client_protocol::StreamInfo

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The most streams one connection may have open at once.
pub const MAX_OPEN_STREAMS: usize = 32;

/// Numbers each opened stream, so a watcher of a stream never mistakes a later stream of the
/// same id for it.
static SERIALS: AtomicU64 = AtomicU64::new(1);

/// One open stream of a publishing connection.
#[derive(Debug, Clone)]
pub struct OpenStream {
    pub serial: u64,
    pub group: Arc<str>,
    /// The stream sequence id of the next fragment.
    pub next: u64,
    pub no_echo: bool,
    /// Closed after this long without a fragment or keep-alive.
    pub idle: Duration,
    pub last_heard: Instant,
}

impl OpenStream {
    pub fn new(group: Arc<str>, no_echo: bool, idle: Duration) -> Self {
        Self {
            serial: SERIALS.fetch_add(1, Ordering::Relaxed),
            group,
            next: 1,
            no_echo,
            idle,
            last_heard: Instant::now(),
        }
    }

    /// When the stream times out, as of now.
    pub fn deadline(&self) -> Instant {
        self.last_heard + self.idle
    }
}

/// An open stream as it moves with its reliable session to another node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MovedStream {
    pub stream_id: String,
    pub group: String,
    pub next: u64,
    #[serde(default)]
    pub no_echo: bool,
    pub idle_ms: u64,
}

impl MovedStream {
    pub fn of(stream_id: &str, stream: &OpenStream) -> Self {
        Self {
            stream_id: stream_id.to_string(),
            group: stream.group.to_string(),
            next: stream.next,
            no_echo: stream.no_echo,
            idle_ms: u64::try_from(stream.idle.as_millis()).unwrap_or(u64::MAX),
        }
    }

    pub fn open(&self) -> OpenStream {
        OpenStream {
            next: self.next,
            ..OpenStream::new(
                self.group.as_str().into(),
                self.no_echo,
                Duration::from_millis(self.idle_ms),
            )
        }
    }
}
