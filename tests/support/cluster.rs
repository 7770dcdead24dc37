//! A three-master Redis Cluster owned by one test: three `redis-server`s
//! on free loopback ports, joined by `redis-cli --cluster create`.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::RedisServer;

/// A running cluster, its nodes killed when dropped.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three masters (no replicas), assigns the 16384 slots and
    /// waits until every node reports `cluster_state:ok`. `args` go to
    /// every `redis-server`.
    pub fn start(args: &[&str]) -> Self {
        Self::start_each(0, |_| args.iter().map(|arg| (*arg).to_owned()).collect())
    }

    /// Like [`RedisCluster::start`], with `extra` free ports of each node's
    /// own handed to `args` (such as a TLS port); the node keeps them in
    /// [`RedisServer::extra_ports`], first.
    pub fn start_each(extra: usize, args: impl Fn(&[u16]) -> Vec<String>) -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                // The bus port is chosen too: the default, port + 10000,
                // may be another test's port.
                RedisServer::start_with_ports(extra + 1, |ports| {
                    let mut node_args: Vec<String> = [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "5000",
                        "--cluster-port",
                    ]
                    .map(str::to_owned)
                    .to_vec();
                    node_args.push(ports[extra].to_string());
                    node_args.extend(args(&ports[..extra]));
                    node_args
                })
            })
            .collect();
        let cluster = Self { nodes };
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        create.args(["--cluster-replicas", "0", "--cluster-yes"]);
        let output = create
            .output()
            .expect("redis-cli must be installed: run `bash ops/scripts/setup.sh`");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        cluster.wait_ok();
        cluster
    }

    /// The seed URL Spool takes: `redis+cluster://host:port,host:port/`.
    pub fn url(&self) -> String {
        self.url_as("")
    }

    /// The nodes, in the order they were started.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Like [`RedisCluster::url`], with `user:password@` (or nothing).
    pub fn url_as(&self, userinfo: &str) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        format!("redis+cluster://{userinfo}{}/", seeds.join(","))
    }

    /// The URL of each node on its own.
    pub fn node_urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for node in &self.nodes {
            let mut info = Command::new("redis-cli");
            info.args(["-p", &node.port.to_string()]);
            info.args(["cluster", "info"]);
            loop {
                let out = info.output().unwrap();
                if String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the cluster on port {} did not reach cluster_state:ok",
                    node.port
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}
