//! The dashboard's settings, as the binary's flags give them.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use spool_broker::QueueName;

use crate::auth::Access;

/// The address the dashboard listens on by default: loopback, port 9470.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9470);

/// How often the queues are read for the overview by default: 1 s.
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// How many readings the overview's charts keep by default: 300 (five
/// minutes at the default interval).
pub const DEFAULT_HISTORY_LEN: usize = 300;

/// How the dashboard runs.
#[derive(Debug, Clone)]
pub struct DashboardConfig {
    /// Where it listens ([`DEFAULT_LISTEN`]).
    pub listen: SocketAddr,
    /// Who may use it ([`Access::Open`] by default: loopback only).
    pub access: Access,
    /// Pages only, no actions (false by default).
    pub read_only: bool,
    /// How often the queues are read ([`DEFAULT_SAMPLE_INTERVAL`]).
    pub sample_interval: Duration,
    /// How many readings are kept ([`DEFAULT_HISTORY_LEN`]).
    pub history_len: usize,
    /// Queues shown besides the routed, paused, known and served ones
    /// (none by default).
    pub queues: Vec<QueueName>,
    /// The directory the packaged outputs are served from; a package task
    /// whose outputs lie elsewhere shows no player (none by default).
    pub media_root: Option<PathBuf>,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            access: Access::Open,
            read_only: false,
            sample_interval: DEFAULT_SAMPLE_INTERVAL,
            history_len: DEFAULT_HISTORY_LEN,
            queues: Vec::new(),
            media_root: None,
        }
    }
}
