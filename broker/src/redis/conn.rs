//! Connections to one Redis server or to a Redis Cluster, behind one
//! interface: the rest of the broker sends commands, pipelines and scripts
//! without knowing which it talks to.
//!
//! A cluster is named by a URL listing seed nodes,
//! `redis+cluster://user:pass@10.0.0.1:7000,10.0.0.2:7000/` (TLS:
//! `rediss+cluster://`). Only the seeds are needed: the client learns the
//! slot map from them and follows `MOVED`/`ASK` redirections.
//!
//! Every key a script or pipeline touches shares one hash tag (see
//! [`super::keys`]), as a cluster requires; pipelines whose keys would span
//! slots are split by the callers.

use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleResult};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Cmd, FromRedisValue, Pipeline, RedisError, RedisFuture, Value};

use super::RedisConfig;
use super::config::redact_url;
use crate::error::{Error, Result};

/// What a configured URL points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Topology {
    /// One server (or a proxy in front of several).
    Single(String),
    /// A Redis Cluster, by the URLs of its seed nodes.
    Cluster(Vec<String>),
}

impl Topology {
    /// Reads a `redis://`, `rediss://`, `redis+unix://`, `redis+cluster://`
    /// or `rediss+cluster://` URL.
    pub(crate) fn parse(url: &str) -> Result<Self> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            Error::Config(format!(
                "invalid Redis URL {}: expected scheme://host",
                redact_url(url)
            ))
        })?;
        let node_scheme = match scheme {
            "redis+cluster" => "redis",
            "rediss+cluster" => "rediss",
            _ => return Ok(Self::Single(url.to_owned())),
        };
        // The user info applies to every seed; the path may only name
        // database 0, the only one a cluster has.
        let (userinfo, hosts_and_path) = match rest.rfind('@') {
            Some(at) => (&rest[..=at], &rest[at + 1..]),
            None => ("", rest),
        };
        let (hosts, tail) = match hosts_and_path.find(['/', '?', '#']) {
            Some(end) => hosts_and_path.split_at(end),
            None => (hosts_and_path, ""),
        };
        let path = tail.split(['?', '#']).next().unwrap_or("");
        if !matches!(path, "" | "/" | "/0") {
            return Err(Error::Config(format!(
                "invalid Redis Cluster URL {}: a cluster has only database 0",
                redact_url(url)
            )));
        }
        let fragment = tail.find('#').map_or("", |at| &tail[at..]);
        let nodes: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|host| !host.is_empty())
            .map(|host| format!("{node_scheme}://{userinfo}{host}/{fragment}"))
            .collect();
        if nodes.is_empty() {
            return Err(Error::Config(format!(
                "invalid Redis Cluster URL {}: no seed nodes",
                redact_url(url)
            )));
        }
        Ok(Self::Cluster(nodes))
    }

    /// Whether every connection is TLS (`rediss://`).
    fn is_tls(&self) -> bool {
        match self {
            Self::Single(url) => url.starts_with("rediss://"),
            Self::Cluster(nodes) => nodes.iter().all(|node| node.starts_with("rediss://")),
        }
    }

    /// The URLs a pub/sub connection may use, in order of preference. In a
    /// cluster a classic `PUBLISH` reaches subscribers on every node, so
    /// any seed will do.
    fn pubsub_urls(&self) -> Vec<String> {
        match self {
            Self::Single(url) => vec![url.clone()],
            Self::Cluster(nodes) => nodes.clone(),
        }
    }
}

/// The connections of one broker.
pub(crate) struct Connections {
    /// Shared by every non-blocking command; reconnects by itself.
    pub(crate) commands: Commands,
    /// Exclusive connections for blocking reads, which would stall a
    /// shared one.
    pub(crate) waits: WaitPool,
    /// Opens pub/sub subscriptions, one per node URL to try in turn.
    pub(crate) pubsub: Vec<redis::Client>,
}

impl Connections {
    /// Opens the shared connection and builds the pool, without waiting
    /// for a blocking connection to be needed.
    pub(crate) async fn open(config: &RedisConfig) -> Result<Self> {
        let topology = Topology::parse(&config.url)?;
        let invalid_url = |e: RedisError| {
            Error::Config(format!(
                "invalid Redis URL {}: {e}",
                redact_url(&config.url)
            ))
        };
        let certificates = config.tls.certificates();
        if certificates.is_some() && !topology.is_tls() {
            return Err(Error::Config(format!(
                "TLS certificates are configured but {} is not a rediss:// URL",
                redact_url(&config.url)
            )));
        }
        if topology.is_tls() {
            ensure_crypto_provider();
        }
        let client = |url: &str| match &certificates {
            Some(certificates) => redis::Client::build_with_tls(url, certificates.clone()),
            None => redis::Client::open(url),
        };
        let pubsub = topology
            .pubsub_urls()
            .iter()
            .map(|url| client(url))
            .collect::<redis::RedisResult<Vec<_>>>()
            .map_err(invalid_url)?;
        let max_size = config.pool_size.max(1);
        let create_timeout = Some(config.connect_timeout);
        let wait_timeout = Some(config.response_timeout);
        match topology {
            Topology::Single(url) => {
                let client = client(&url).map_err(invalid_url)?;
                let exclusive = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(config.connect_timeout))
                    .set_response_timeout(Some(config.response_timeout));
                // One plain attempt first: the manager below retries every
                // failure with backoff for seconds, which only helps while
                // the server is not listening yet. A wrong password or an
                // untrusted certificate fails here at once.
                if let Err(e) = client
                    .get_multiplexed_async_connection_with_config(&exclusive)
                    .await
                    && !(e.is_connection_refusal() || e.is_timeout())
                {
                    return Err(map_connect(e, &config.url));
                }
                let shared = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.connect_timeout))
                    .set_response_timeout(Some(config.response_timeout))
                    .set_max_delay(Duration::from_secs(2));
                let commands = ConnectionManager::new_with_config(client.clone(), shared)
                    .await
                    .map_err(|e| map_connect(e, &config.url))?;
                // The connection info carries the certificates too.
                let manager = deadpool_redis::Manager::new_with_config(
                    client.get_connection_info().clone(),
                    exclusive,
                )
                .map_err(invalid_url)?;
                let waits = deadpool_redis::Pool::builder(manager)
                    .max_size(max_size)
                    .runtime(deadpool_redis::Runtime::Tokio1)
                    .create_timeout(create_timeout)
                    .wait_timeout(wait_timeout)
                    .build()
                    .map_err(|e| Error::Config(e.to_string()))?;
                Ok(Self {
                    commands: Commands::Single(commands),
                    waits: WaitPool::Single(waits),
                    pubsub,
                })
            }
            Topology::Cluster(nodes) => {
                let mut builder = ClusterClientBuilder::new(nodes)
                    .connection_timeout(config.connect_timeout)
                    .response_timeout(config.response_timeout);
                if let Some(certificates) = certificates {
                    builder = builder.certs(certificates);
                }
                let client = builder.build().map_err(invalid_url)?;
                let commands = client
                    .get_async_connection()
                    .await
                    .map_err(|e| map_connect(e, &config.url))?;
                let waits = managed::Pool::builder(ClusterManager { client })
                    .max_size(max_size)
                    .runtime(deadpool::Runtime::Tokio1)
                    .create_timeout(create_timeout)
                    .wait_timeout(wait_timeout)
                    .build()
                    .map_err(|e| Error::Config(e.to_string()))?;
                Ok(Self {
                    commands: Commands::Cluster(commands),
                    waits: WaitPool::Cluster(waits),
                    pubsub,
                })
            }
        }
    }
}

/// An error met while connecting to `url`: a reply that does not parse
/// means something other than Redis listens there (an HTTP server answers
/// `HTTP/1.1 400`), which a parser's "Unexpected byte" does not say.
pub(crate) fn map_connect(e: RedisError, url: &str) -> Error {
    if e.kind() == redis::ErrorKind::Parse {
        Error::NotRedis {
            url: redact_url(url),
            detail: e.to_string(),
        }
    } else {
        super::map_redis(e)
    }
}

/// Implements `ConnectionLike` for an enum of one server's and a
/// cluster's connection by handing each call to the variant's.
macro_rules! delegate_connection_like {
    ($name:ident) => {
        impl ConnectionLike for $name {
            fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
                match self {
                    Self::Single(conn) => conn.req_packed_command(cmd),
                    Self::Cluster(conn) => conn.req_packed_command(cmd),
                }
            }

            fn req_packed_commands<'a>(
                &'a mut self,
                pipeline: &'a Pipeline,
                offset: usize,
                count: usize,
            ) -> RedisFuture<'a, Vec<Value>> {
                match self {
                    Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
                    Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
                }
            }

            fn get_db(&self) -> i64 {
                match self {
                    Self::Single(conn) => conn.get_db(),
                    Self::Cluster(conn) => conn.get_db(),
                }
            }
        }
    };
}

/// The shared connection: a cheap handle, cloned per command.
#[derive(Clone)]
pub(crate) enum Commands {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Commands {
    /// Whether this talks to a Redis Cluster, where a pipeline must stay
    /// within one slot.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// Runs `cmd` on one node, chosen at random in a cluster: for
    /// server-wide questions (`INFO`, `CONFIG GET`) that a cluster client
    /// would otherwise fan out to every node.
    pub(crate) async fn query_one_node<T: FromRedisValue>(
        &mut self,
        cmd: &Cmd,
    ) -> redis::RedisResult<T> {
        let reply = match self {
            Self::Single(conn) => conn.req_packed_command(cmd).await?,
            Self::Cluster(conn) => {
                use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
                conn.route_command(
                    cmd.clone(),
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
                )
                .await?
            }
        };
        Ok(redis::from_redis_value(reply)?)
    }
}

impl Commands {
    /// Every key matching `pattern`, by `SCAN` (never `KEYS`, which would
    /// block the server): on a cluster, on every master in turn, each
    /// reached through a slot it serves. A key may come twice (SCAN's
    /// guarantee is "at least once"); the caller deduplicates.
    pub(crate) async fn scan_every_master(
        &mut self,
        pattern: &str,
    ) -> redis::RedisResult<Vec<String>> {
        let mut keys = Vec::new();
        match self {
            Self::Single(conn) => scan_node(conn, pattern, None, &mut keys).await?,
            Self::Cluster(conn) => {
                let nodes: String =
                    self_query_random(conn, redis::cmd("CLUSTER").arg("NODES")).await?;
                for slot in master_slots(&nodes) {
                    scan_node(conn, pattern, Some(slot), &mut keys).await?;
                }
            }
        }
        Ok(keys)
    }
}

/// Runs `cmd` on a random node of the cluster.
async fn self_query_random<T: FromRedisValue>(
    conn: &mut ClusterConnection,
    cmd: &Cmd,
) -> redis::RedisResult<T> {
    use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
    let reply = conn
        .route_command(
            cmd.clone(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        )
        .await?;
    Ok(redis::from_redis_value(reply)?)
}

/// One slot served by each master that `CLUSTER NODES` lists as healthy:
/// routing a command to a slot's master reaches that node whatever address
/// it announces.
fn master_slots(nodes: &str) -> Vec<u16> {
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            let healthy = flags.split(',').any(|f| f == "master")
                && !flags.split(',').any(|f| f == "fail" || f == "noaddr");
            if !healthy {
                return None;
            }
            // Slots follow the 8 fixed fields: `0-5460`, `5461`, or an
            // importing/migrating `[...]` entry, which is skipped.
            fields.get(8..)?.iter().find_map(|range| {
                range
                    .split('-')
                    .next()
                    .and_then(|start| start.parse::<u16>().ok())
            })
        })
        .collect()
}

/// SCANs one node to the end: the single server (`slot` `None`), or the
/// master serving `slot`.
async fn scan_node<C: ClusterRoute>(
    conn: &mut C,
    pattern: &str,
    slot: Option<u16>,
    keys: &mut Vec<String>,
) -> redis::RedisResult<()> {
    let mut cursor: u64 = 0;
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000);
        let (next, page): (u64, Vec<String>) = conn.run_on(&cmd, slot).await?;
        keys.extend(page);
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// Runs a command on one node: the connection's own, or a cluster's
/// master of a slot.
trait ClusterRoute {
    async fn run_on<T: FromRedisValue>(
        &mut self,
        cmd: &Cmd,
        slot: Option<u16>,
    ) -> redis::RedisResult<T>;
}

impl ClusterRoute for ConnectionManager {
    async fn run_on<T: FromRedisValue>(
        &mut self,
        cmd: &Cmd,
        _slot: Option<u16>,
    ) -> redis::RedisResult<T> {
        cmd.query_async(self).await
    }
}

impl ClusterRoute for ClusterConnection {
    async fn run_on<T: FromRedisValue>(
        &mut self,
        cmd: &Cmd,
        slot: Option<u16>,
    ) -> redis::RedisResult<T> {
        use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
        let routing = match slot {
            Some(slot) => SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master)),
            None => SingleNodeRoutingInfo::RandomPrimary,
        };
        let reply = self
            .route_command(cmd.clone(), RoutingInfo::SingleNode(routing))
            .await?;
        Ok(redis::from_redis_value(reply)?)
    }
}

delegate_connection_like!(Commands);

/// Makes the cluster connections of the blocking-read pool with the
/// broker's own timeouts (deadpool-redis' cluster manager takes only URLs).
pub(crate) struct ClusterManager {
    client: ClusterClient,
}

impl managed::Manager for ClusterManager {
    type Type = ClusterConnection;
    type Error = RedisError;

    async fn create(&self) -> std::result::Result<ClusterConnection, RedisError> {
        self.client.get_async_connection().await
    }

    async fn recycle(
        &self,
        conn: &mut ClusterConnection,
        _: &Metrics,
    ) -> RecycleResult<RedisError> {
        let _: () = redis::cmd("PING").query_async(conn).await?;
        Ok(())
    }
}

/// The blocking-read pool.
pub(crate) enum WaitPool {
    Single(deadpool_redis::Pool),
    Cluster(managed::Pool<ClusterManager>),
}

/// An exclusive connection from the [`WaitPool`], returned to it on drop.
pub(crate) enum WaitConn {
    Single(deadpool_redis::Connection),
    Cluster(managed::Object<ClusterManager>),
}

impl WaitPool {
    /// An idle connection, or a new one while the pool has room.
    pub(crate) async fn get(&self) -> std::result::Result<WaitConn, deadpool_redis::PoolError> {
        match self {
            Self::Single(pool) => pool.get().await.map(WaitConn::Single),
            Self::Cluster(pool) => pool.get().await.map(WaitConn::Cluster),
        }
    }
}

delegate_connection_like!(WaitConn);

/// rustls picks its crypto backend from the process-wide default, and
/// cannot guess it when a process links two backends (the object-storage
/// clients bring aws-lc-rs beside the broker's ring). Unless the application
/// installed one already, `rediss://` installs ring, the backend the broker
/// is built with.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Refused only when another thread installed one first: fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_urls_name_one_server() {
        for url in [
            "redis://127.0.0.1:6379/",
            "rediss://u:p@redis.internal:6380/2",
            "redis+unix:///run/redis.sock",
        ] {
            assert_eq!(
                Topology::parse(url).unwrap(),
                Topology::Single(url.to_owned())
            );
        }
    }

    #[test]
    fn cluster_urls_list_their_seeds_with_shared_credentials() {
        assert_eq!(
            Topology::parse("redis+cluster://spool-worker:pw@10.0.0.1:7000,10.0.0.2:7001/")
                .unwrap(),
            Topology::Cluster(vec![
                "redis://spool-worker:pw@10.0.0.1:7000/".to_owned(),
                "redis://spool-worker:pw@10.0.0.2:7001/".to_owned(),
            ])
        );
        assert_eq!(
            Topology::parse("rediss+cluster://a:7000#insecure").unwrap(),
            Topology::Cluster(vec!["rediss://a:7000/#insecure".to_owned()])
        );
    }

    #[test]
    fn cluster_urls_without_seeds_or_with_a_database_are_refused() {
        for url in ["redis+cluster:///", "redis+cluster://a:7000/3", "nonsense"] {
            let err = Topology::parse(url).unwrap_err().to_string();
            assert!(err.contains("invalid Redis"), "{url}: {err}");
        }
        let err = Topology::parse("redis+cluster://u:secret@a:7000/3")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secret"), "{err}");
    }
}
