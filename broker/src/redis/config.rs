//! How to reach Redis.

use std::fmt;
use std::time::Duration;

use super::TlsConfig;
use crate::signing::SigningKeys;

/// How to reach Redis and lay out Spool's keys.
///
/// Its `Debug` output hides the URL's password and the signing keys.
#[derive(Clone, PartialEq)]
pub struct RedisConfig {
    /// A `redis://`, `rediss://` (TLS) or `redis+unix://` URL, with
    /// credentials and database if needed; or a Redis Cluster by some of
    /// its nodes, `redis+cluster://user:pass@host1:7000,host2:7000/`
    /// (`rediss+cluster://` with TLS). A TLS server's certificate must
    /// verify against the system roots or the CA file `SSL_CERT_FILE`
    /// names, unless [`tls`](Self::tls) gives a CA. Default:
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
    /// The keys that sign every envelope this broker writes and verify
    /// every one it fetches: unsigned or forged entries are dead-lettered
    /// (`unsigned`, `bad_signature`) and never run. Default: `None`, no
    /// signing: plain envelopes are written, and signed ones are accepted
    /// without verification.
    pub signing: Option<SigningKeys>,
    /// A CA to trust and a client certificate to present on `rediss://`
    /// connections. Default: empty (system roots, no client certificate).
    pub tls: TlsConfig,
    /// The most bytes one envelope may take in Redis (a signed frame's
    /// header included). An enqueue of a larger one fails with
    /// [`Error::Oversized`](crate::Error::Oversized) before anything is
    /// sent; a larger entry found in a stream (written by something else)
    /// is dead-lettered `oversized` without being decoded. Default:
    /// [`DEFAULT_MAX_ENVELOPE_BYTES`](crate::DEFAULT_MAX_ENVELOPE_BYTES),
    /// 16 MiB.
    pub max_envelope_bytes: usize,
    /// Whether a workflow node that becomes ready is added to its queue's
    /// stream by the same script that records the outcome readying it (at
    /// submit, the script that writes the graph): readiness and enqueue in
    /// one atomic step, with no outbox entry, deduplication mark or
    /// dispatch round trip. Only where one script may write both the
    /// workflow's keys and its queues' keys: a single server, envelopes
    /// unsigned ([`signing`](Self::signing) off, since a script cannot
    /// sign), no ETA; every other node, and every node on a Redis Cluster,
    /// goes through the workflow's outbox and a deduplicated enqueue (see
    /// [`crate::workflow`]). Default: `true`.
    pub atomic_workflow_enqueue: bool,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("promote_batch", &self.promote_batch)
            .field("signing", &self.signing)
            .field("tls", &self.tls)
            .field("max_envelope_bytes", &self.max_envelope_bytes)
            .field("atomic_workflow_enqueue", &self.atomic_workflow_enqueue)
            .finish_non_exhaustive()
    }
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
            signing: None,
            tls: TlsConfig::default(),
            max_envelope_bytes: crate::envelope::DEFAULT_MAX_ENVELOPE_BYTES,
            atomic_workflow_enqueue: true,
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

    /// The URL of each seed node when [`url`](Self::url) names a Redis
    /// Cluster (`redis+cluster://`, `rediss+cluster://`), each with the
    /// cluster URL's credentials; `None` for a single server. For tools
    /// that open connections of their own beside the broker's.
    ///
    /// ```
    /// use spool_broker::RedisConfig;
    ///
    /// let config = RedisConfig::from_url("redis+cluster://u:pw@a:7000,b:7001/");
    /// assert_eq!(
    ///     config.cluster_nodes()?,
    ///     Some(vec!["redis://u:pw@a:7000/".to_owned(), "redis://u:pw@b:7001/".to_owned()])
    /// );
    /// assert_eq!(RedisConfig::default().cluster_nodes()?, None);
    /// # Ok::<(), spool_broker::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Config`](crate::Error::Config) for a cluster URL without
    /// seeds or naming a database other than 0.
    pub fn cluster_nodes(&self) -> crate::Result<Option<Vec<String>>> {
        Ok(match super::conn::Topology::parse(&self.url)? {
            super::conn::Topology::Single(_) => None,
            super::conn::Topology::Cluster(nodes) => Some(nodes),
        })
    }

    /// `url` with its credentials replaced by `***`, for logs and output:
    /// the user info (`user:password@`) and `pass`/`password` query
    /// parameters, of each comma-separated URL. Works for any URL of that
    /// shape, a PostgreSQL job store's too.
    ///
    /// ```
    /// use spool_broker::RedisConfig;
    ///
    /// let shown = RedisConfig::redact("redis://spool:s3cret@10.0.0.1:6379/0");
    /// assert_eq!(shown, "redis://***@10.0.0.1:6379/0");
    /// ```
    #[must_use]
    pub fn redact(url: &str) -> String {
        redact_url(url)
    }
}

impl super::RedisBroker {
    /// The keys that sign and verify envelopes, if signing is on.
    pub(crate) fn signing(&self) -> Option<&SigningKeys> {
        self.config().signing.as_ref()
    }
}

/// The URL with its credentials replaced, for logs and debug output: the
/// user info (`user:password@`) and any `password` or `pass` query
/// parameter (as `redis+unix://` URLs take them). Each of several
/// comma-separated URLs (cluster seeds) is redacted.
pub(crate) fn redact_url(url: &str) -> String {
    url.split(',').map(redact_one).collect::<Vec<_>>().join(",")
}

fn redact_one(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = match (base.find("://"), base.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***@{}", &base[..scheme_end], &base[at + 1..])
        }
        // No scheme: all of it may be a password.
        (None, Some(_)) => "***".to_owned(),
        _ => base.to_owned(),
    };
    if let Some(query) = query {
        out.push('?');
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((name, _)) if name.to_ascii_lowercase().contains("pass") => {
                    format!("{name}=***")
                }
                _ => param.to_owned(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    out
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
        assert_eq!(
            redact_url("redis+unix:///run/redis.sock?db=1&pass=s3cret"),
            "redis+unix:///run/redis.sock?db=1&pass=***"
        );
        assert_eq!(
            redact_url("redis://:a@b:1,redis://:c@d:2"),
            "redis://***@b:1,redis://***@d:2"
        );
        assert_eq!(redact_url("user:s3cret@host"), "***");
    }

    #[test]
    fn debug_output_hides_the_password_and_the_keys() {
        let key = "k3y-material-0123456789abcdef0123456789";
        let config = RedisConfig {
            signing: Some(SigningKeys::new(key).unwrap()),
            ..RedisConfig::from_url("rediss://spool:pa55word@redis.internal:6380/0")
        };
        let shown = format!("{config:?}");
        assert!(shown.contains("redis.internal:6380"), "{shown}");
        assert!(
            !shown.contains("pa55word") && !shown.contains(key),
            "{shown}"
        );
    }
}
