//! The connection settings every Spool binary takes: where Redis is, how
//! its keys are laid out, how tasks are signed, the TLS files, the job
//! store, and how long to wait for Redis.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_broker::{RedisBroker, RedisConfig, SigningKeys, TlsConfig};

use crate::TlsArgs;
use crate::error::{Error, Result};
use crate::text::{HumanDuration, OptionalPath, duration};

/// The `--help` heading of the connection flags: set on each flag, not
/// on the struct, since a struct's `next_help_heading` would carry over
/// to the flags declared after it.
pub const CONNECTION_HEADING: &str = "Connection";
/// The Redis URL when none is given.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/";
/// The key prefix when none is given.
pub const DEFAULT_KEY_PREFIX: &str = "spool";
/// The store URL that means no job store, and the default.
pub const NO_STORE: &str = "none";
/// How long to wait for Redis to accept a connection, when not given.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a Redis command may go unanswered, when not given and the
/// binary has no reason for another (the worker's blocking fetches need
/// longer).
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

crate::layered! {
    /// The connection flags, the same in every binary: flatten them with
    /// `#[command(flatten)]`, then [`ConnectionArgs::resolve`] (or
    /// [`ConnectionFile::resolve`] after layering a file under them).
    ///
    /// # Examples
    ///
    /// ```
    /// use clap::Parser;
    /// use spool_cli_common::ConnectionArgs;
    ///
    /// #[derive(Parser)]
    /// struct Cli {
    ///     #[command(flatten)]
    ///     connection: ConnectionArgs,
    /// }
    ///
    /// let cli = Cli::parse_from(["tool", "--key-prefix", "test", "--redis-command-timeout", "2s"]);
    /// let connection = cli.connection.resolve()?;
    /// assert_eq!(connection.key_prefix, "test");
    /// assert_eq!(connection.redis_command_timeout, std::time::Duration::from_secs(2));
    /// # Ok::<(), spool_cli_common::Error>(())
    /// ```
    ///
    /// `--help` lists them under their own heading, [`CONNECTION_HEADING`].
    pub struct ConnectionArgs / ConnectionFile {
        /// The Redis holding the queues (redis://, rediss:// for TLS,
        /// redis+cluster://host:port,host:port/ for a cluster); credentials in it
        /// are never printed [default: redis://127.0.0.1:6379/]
        #[arg(long, global = true, help_heading = CONNECTION_HEADING, env = "SPOOL_REDIS_URL", hide_env_values = true, value_name = "URL")]
        redis_url: String,

        /// The first part of every Redis key; workers, producers and tools must
        /// agree [default: spool]
        #[arg(long, global = true, help_heading = CONNECTION_HEADING, env = "SPOOL_KEY_PREFIX", value_name = "PREFIX")]
        key_prefix: String,

        /// A file of HMAC keys, one a line, each at least 32 bytes (openssl rand
        /// -hex 32): its first line signs what this binary enqueues; a worker
        /// dead-letters unsigned or forged tasks unrun and accepts the further
        /// lines as older keys. none: no signing [default: none]
        #[arg(long, global = true, help_heading = CONNECTION_HEADING, env = "SPOOL_SIGNING_KEY_FILE", value_name = "FILE")]
        signing_key_file: OptionalPath,

        /// A PEM file of CA certificates to trust for rediss:// instead of the
        /// system roots (or SSL_CERT_FILE); none: the system roots [default: none]
        #[arg(long, global = true, help_heading = CONNECTION_HEADING, env = "SPOOL_TLS_CA_CERT_FILE", value_name = "FILE")]
        tls_ca_cert_file: OptionalPath,

        /// A PEM client certificate for rediss:// servers that require one
        /// (tls-auth-clients yes), with --tls-key-file; none: no client
        /// certificate [default: none]
        #[arg(long, global = true, help_heading = CONNECTION_HEADING, env = "SPOOL_TLS_CERT_FILE", value_name = "FILE")]
        tls_cert_file: OptionalPath,

        /// The PEM private key of --tls-cert-file; none: no client certificate
        /// [default: none]
        #[arg(long, global = true, help_heading = CONNECTION_HEADING, env = "SPOOL_TLS_KEY_FILE", value_name = "FILE")]
        tls_key_file: OptionalPath,

        /// The job store: a sqlite: or postgres:// URL, or none (credentials in
        /// it are never printed) [default: none]
        #[arg(long, global = true, help_heading = CONNECTION_HEADING, env = "SPOOL_STORE_URL", hide_env_values = true, value_name = "URL")]
        store_url: String,

        /// How long to wait for Redis to accept a connection before failing
        /// with an error naming this flag [default: 5s]
        #[arg(long, global = true, help_heading = CONNECTION_HEADING, env = "SPOOL_REDIS_CONNECT_TIMEOUT", value_name = "TIME")]
        redis_connect_timeout: HumanDuration,

        /// How long a Redis command may go unanswered before it fails with an
        /// error naming this flag [default: 5s; spool-worker: 30s, above its
        /// blocking fetches; spool-beat: a third of lock_ttl]
        #[arg(long, global = true, help_heading = CONNECTION_HEADING, env = "SPOOL_REDIS_COMMAND_TIMEOUT", value_name = "TIME")]
        redis_command_timeout: HumanDuration,
    }
}

impl ConnectionArgs {
    /// These flags with the defaults: [`ConnectionFile::resolve`] with
    /// [`DEFAULT_COMMAND_TIMEOUT`].
    ///
    /// # Errors
    ///
    /// As [`ConnectionFile::resolve`].
    pub fn resolve(&self) -> Result<Connection> {
        ConnectionFile::from(self.clone()).resolve(DEFAULT_COMMAND_TIMEOUT)
    }
}

impl From<ConnectionArgs> for ConnectionFile {
    fn from(flags: ConnectionArgs) -> Self {
        flags.over(Self::default())
    }
}

impl ConnectionFile {
    /// The settings with the defaults filled in ([`DEFAULT_REDIS_URL`],
    /// [`DEFAULT_KEY_PREFIX`], [`NO_STORE`], [`DEFAULT_CONNECT_TIMEOUT`],
    /// and `command_timeout` for `--redis-command-timeout`), checked.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the flag: a key prefix that is empty or
    /// holds braces or spaces, a zero timeout, a client certificate without
    /// its key or the other way round.
    pub fn resolve(self, command_timeout: Duration) -> Result<Connection> {
        let connection = Connection {
            redis_url: self
                .redis_url
                .unwrap_or_else(|| DEFAULT_REDIS_URL.to_owned()),
            key_prefix: self
                .key_prefix
                .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned()),
            signing_key_file: self.signing_key_file.and_then(|p| p.0),
            tls_ca_cert_file: self.tls_ca_cert_file.and_then(|p| p.0),
            tls_cert_file: self.tls_cert_file.and_then(|p| p.0),
            tls_key_file: self.tls_key_file.and_then(|p| p.0),
            store_url: self.store_url.unwrap_or_else(|| NO_STORE.to_owned()),
            redis_connect_timeout: self
                .redis_connect_timeout
                .map_or(DEFAULT_CONNECT_TIMEOUT, |d| d.0),
            redis_command_timeout: self.redis_command_timeout.map_or(command_timeout, |d| d.0),
        };
        connection.validate()?;
        Ok(connection)
    }
}

/// Where Redis and the job store are, resolved: what the connection flags
/// (and a file, for the worker) asked for, with the defaults.
///
/// Its `Debug` output hides the passwords in the URLs; the signing keys
/// are never in it, only their file's path.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// The Redis URL.
    pub redis_url: String,
    /// The Redis key prefix.
    pub key_prefix: String,
    /// The file of HMAC keys that sign and verify envelopes, if any.
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
    /// The CA certificates trusted for `rediss://`, if not the system's.
    #[serde(default)]
    pub tls_ca_cert_file: Option<PathBuf>,
    /// The client certificate presented on `rediss://`, if any.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// The client certificate's private key.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// The job store URL (`sqlite:…` or `postgres://…`), or [`NO_STORE`].
    pub store_url: String,
    /// How long to wait for Redis to accept a connection.
    #[serde(with = "duration", default = "default_connect_timeout")]
    pub redis_connect_timeout: Duration,
    /// How long a Redis command may go unanswered.
    #[serde(with = "duration", default = "default_command_timeout")]
    pub redis_command_timeout: Duration,
}

fn default_connect_timeout() -> Duration {
    DEFAULT_CONNECT_TIMEOUT
}

fn default_command_timeout() -> Duration {
    DEFAULT_COMMAND_TIMEOUT
}

impl Default for Connection {
    fn default() -> Self {
        Self {
            redis_url: DEFAULT_REDIS_URL.to_owned(),
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            signing_key_file: None,
            tls_ca_cert_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            store_url: NO_STORE.to_owned(),
            redis_connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            redis_command_timeout: DEFAULT_COMMAND_TIMEOUT,
        }
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("redis_url", &RedisConfig::redact(&self.redis_url))
            .field("key_prefix", &self.key_prefix)
            .field("signing_key_file", &self.signing_key_file)
            .field("tls_ca_cert_file", &self.tls_ca_cert_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("store_url", &RedisConfig::redact(&self.store_url))
            .field("redis_connect_timeout", &self.redis_connect_timeout)
            .field("redis_command_timeout", &self.redis_command_timeout)
            .finish()
    }
}

impl Connection {
    fn validate(&self) -> Result<()> {
        let problem = if self.key_prefix.is_empty()
            || self.key_prefix.contains(['{', '}'])
            || self.key_prefix.contains(char::is_whitespace)
        {
            "--key-prefix must be non-empty, without braces or spaces".to_owned()
        } else if self.redis_connect_timeout.is_zero() {
            "--redis-connect-timeout must be positive".to_owned()
        } else if self.redis_command_timeout.is_zero() {
            "--redis-command-timeout must be positive".to_owned()
        } else if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            "--tls-cert-file and --tls-key-file go together: give both or neither".to_owned()
        } else {
            return Ok(());
        };
        Err(Error::Config(problem))
    }

    /// These settings with the URLs' passwords replaced by `***`.
    #[must_use]
    pub fn redacted(&self) -> Self {
        Self {
            redis_url: RedisConfig::redact(&self.redis_url),
            store_url: RedisConfig::redact(&self.store_url),
            ..self.clone()
        }
    }

    /// The TLS files, as the flags that name them, for processes started
    /// with the same access.
    #[must_use]
    pub fn tls_args(&self) -> TlsArgs {
        TlsArgs {
            tls_ca_cert_file: self.tls_ca_cert_file.clone(),
            tls_cert_file: self.tls_cert_file.clone(),
            tls_key_file: self.tls_key_file.clone(),
        }
    }

    /// How to reach Redis: the URL, key prefix and timeouts, with the
    /// signing keys and TLS certificates read from their files now.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when a file cannot be read or holds a bad key (the
    /// message names the flag and the file, never a key).
    pub fn redis_config(&self) -> Result<RedisConfig> {
        let signing = self
            .signing_key_file
            .as_deref()
            .map(SigningKeys::from_file)
            .transpose()
            .map_err(|e| match e {
                spool_broker::Error::Config(problem) => {
                    Error::Config(format!("--signing-key-file: {problem}"))
                }
                other => Error::Broker(other),
            })?;
        let tls = TlsConfig::from_files(
            self.tls_ca_cert_file.as_deref(),
            self.tls_cert_file.as_deref(),
            self.tls_key_file.as_deref(),
        )
        .map_err(|e| match e {
            spool_broker::Error::Config(problem) => Error::Config(problem),
            other => Error::Broker(other),
        })?;
        Ok(RedisConfig {
            key_prefix: self.key_prefix.clone(),
            signing,
            tls,
            connect_timeout: self.redis_connect_timeout,
            response_timeout: self.redis_command_timeout,
            ..RedisConfig::from_url(&self.redis_url)
        })
    }

    /// Connects with `config` (from [`redis_config`](Self::redis_config),
    /// tuned), giving up after the connect timeout in all: the broker's
    /// own retries for a server not yet listening included.
    ///
    /// # Errors
    ///
    /// [`Error::ConnectTimeout`] when no connection came in time, and the
    /// broker's error otherwise (a refused password, a bad certificate);
    /// neither holds the URL's password.
    pub async fn connect(&self, config: RedisConfig) -> Result<RedisBroker> {
        let timeout = Error::ConnectTimeout(self.redis_connect_timeout);
        match tokio::time::timeout(self.redis_connect_timeout, RedisBroker::connect(config)).await {
            Ok(Ok(broker)) => Ok(broker),
            Ok(Err(e)) if e.is_timeout() => Err(timeout),
            Ok(Err(e)) => Err(Error::Broker(e)),
            Err(_) => Err(timeout),
        }
    }

    /// `e`, with a broker timeout said to be this command timeout's.
    #[must_use]
    pub fn explain(&self, e: spool_broker::Error) -> Error {
        if e.is_timeout() {
            Error::CommandTimeout(self.redis_command_timeout)
        } else {
            Error::Broker(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        connection: ConnectionArgs,
    }

    fn resolve(args: &[&str]) -> Result<Connection> {
        let cli = Cli::try_parse_from(std::iter::once("tool").chain(args.iter().copied()))
            .map_err(|e| Error::Config(e.to_string()))?;
        cli.connection.resolve()
    }

    #[test]
    fn flags_over_a_file_over_defaults() {
        // (SPOOL_REDIS_URL may be set for the tests.)
        let defaults = resolve(&[]).unwrap();
        let expected = Connection {
            redis_url: defaults.redis_url.clone(),
            ..Connection::default()
        };
        assert_eq!(defaults, expected);
        let file: ConnectionFile = toml::from_str(
            "key_prefix = \"file\"\ntls_ca_cert_file = \"ca.pem\"\nredis_command_timeout = \"9s\"",
        )
        .unwrap();
        let cli = Cli::try_parse_from(["tool", "--key-prefix", "flag"]).unwrap();
        let merged = cli
            .connection
            .over(file)
            .resolve(Duration::from_secs(30))
            .unwrap();
        assert_eq!(merged.key_prefix, "flag");
        assert_eq!(merged.tls_ca_cert_file, Some(PathBuf::from("ca.pem")));
        assert_eq!(merged.redis_command_timeout, Duration::from_secs(9));
        assert_eq!(merged.redis_connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        let merged = ConnectionFile::default()
            .resolve(Duration::from_secs(30))
            .unwrap();
        assert_eq!(merged.redis_command_timeout, Duration::from_secs(30));
    }

    #[test]
    fn bad_values_name_their_flag() {
        for (args, flag) in [
            (&["--key-prefix", "a b"][..], "--key-prefix"),
            (
                &["--redis-connect-timeout", "0s"],
                "--redis-connect-timeout",
            ),
            (
                &["--redis-command-timeout", "soon"],
                "--redis-command-timeout",
            ),
            (&["--tls-cert-file", "c.pem"], "--tls-key-file"),
        ] {
            let e = resolve(args).unwrap_err().to_string();
            assert!(e.contains(flag), "{args:?}: {e}");
        }
        let none = resolve(&["--signing-key-file", "none"]).unwrap();
        assert_eq!(none.signing_key_file, None);
    }

    #[test]
    fn debug_output_hides_passwords() {
        let c = resolve(&[
            "--redis-url",
            "redis://u:hunter2@h:1/",
            "--store-url",
            "postgres://u:hunter2@db/x",
        ])
        .unwrap();
        let shown = format!("{c:?} {:?}", c.redacted());
        assert!(!shown.contains("hunter2"), "{shown}");
        let flags = Cli::try_parse_from(["tool", "--redis-url", "redis://u:hunter2@h:1/"]).unwrap();
        let shown = format!("{:?}", flags.connection);
        assert!(
            shown.contains("redis_url") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
