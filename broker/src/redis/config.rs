//! How to reach Redis.

use std::time::Duration;

/// How to reach Redis and lay out Spool's keys.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    /// A `redis://`, `rediss://` (TLS) or `redis+unix://` URL, with
    /// credentials and database if needed. Default:
    /// `redis://127.0.0.1:6379/`.
    pub url: String,
    /// The first part of every key, so several deployments (or tests) can
    /// share one Redis. Must not contain braces or spaces. Default: `spool`.
    pub key_prefix: String,
    /// The most connections kept for blocking waits: each fetcher waiting on
    /// an empty queue holds one. Every other command shares one multiplexed
    /// connection. Default: 32.
    pub pool_size: usize,
    /// How long to wait for a new connection. Default: 5 s.
    pub connect_timeout: Duration,
    /// How long to wait for any reply before the connection is considered
    /// broken; must exceed the longest `wait_for_work` timeout. Default: 30 s.
    pub response_timeout: Duration,
    /// The most due delayed tasks promoted by one fetch. Default: 1000.
    pub promote_batch: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/".to_owned(),
            key_prefix: "spool".to_owned(),
            pool_size: 32,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(30),
            promote_batch: 1000,
        }
    }
}

impl RedisConfig {
    /// The default configuration for another URL.
    #[must_use]
    pub fn from_url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }
}

/// The URL with any password replaced, for logs and debug output.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("redis://worker:s3cret@10.0.0.1:6379/0"),
            "redis://***@10.0.0.1:6379/0"
        );
        assert_eq!(redact_url("redis://127.0.0.1/"), "redis://127.0.0.1/");
    }
}
